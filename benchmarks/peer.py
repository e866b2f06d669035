"""promptcache against llama.cpp's `llama-server` on the same CPU, model file and workloads.

    python benchmarks/peer.py --llama-server /opt/llama/build/bin/llama-server
    python benchmarks/peer.py --llama-server PATH --json --skip chat,rag

Each server is started in turn (never both at once: they share the cores), warmed up with one
request, then driven through the official openai client with the same requests:
- chat: 4 conversations x 4 turns, interleaved, sharing a ~1,000-token system prompt; the later
  turns' time to first token, and to the end of a 32-token reply;
- rag: 3 documents of ~700 tokens, each asked 3 questions in turn; first token of the questions
  whose document was seen before;
- long prefix: one ~1,900-token prefix, then 3 short questions after it; first token;
- decode: 1 and 4 concurrent streams of 128 tokens (ignore_eos), tokens/s after the first token.
llama-server runs with the issue's settings: 2 threads, 4 slots, `--slot-prompt-similarity 0`.
How to build it outside the project: docs/benchmarks.md. It is never a dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.live_server import serve  # noqa: E402
from benchmarks.server import system_prompt, user_turn  # noqa: E402

DOC_WORDS = ("The warehouse ledger for quarter {d} lists pallets, their bay numbers, inbound dates, "
             "the carrier of each load and the inspector who signed it off. ")


@dataclass
class Stream:
    """One streamed reply: when it started, when each content chunk came, how many tokens."""

    start: float
    chunk_times: list[float]
    tokens: int
    text: str

    @property
    def ttft_ms(self) -> float:
        return 1000 * ((self.chunk_times[0] if self.chunk_times else time.perf_counter()) - self.start)

    @property
    def total_ms(self) -> float:
        return 1000 * (self.chunk_times[-1] - self.start)


def stream(client: openai.OpenAI, model: str, messages: list[dict], max_tokens: int, ignore_eos: bool = False) -> Stream:
    start = time.perf_counter()
    times, parts, usage = [], [], None
    response = client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True} if ignore_eos else None)
    for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    tokens = usage.completion_tokens if usage is not None else len(times)
    return Stream(start, times, tokens, "".join(parts))


def chat(client, model: str, reply_tokens: int = 32) -> dict:
    system = system_prompt()
    convs = [[{"role": "system", "content": system}] for _ in range(4)]
    later: list[Stream] = []
    for turn in range(4):
        for c, messages in enumerate(convs):
            messages.append({"role": "user", "content": user_turn(c, turn)})
            s = stream(client, model, messages, reply_tokens, ignore_eos=True)
            messages.append({"role": "assistant", "content": s.text})
            if turn > 0:
                later.append(s)
    return {"chat_ttft_ms": _mean(s.ttft_ms for s in later), "chat_reply_ms": _mean(s.total_ms for s in later)}


def rag(client, model: str) -> dict:
    docs = [" ".join(DOC_WORDS.format(d=d) + f"Entry {d}-{k}." for k in range(22)) for d in range(3)]
    repeated: list[Stream] = []
    for q in range(3):
        for d, doc in enumerate(docs):
            messages = [{"role": "system", "content": "Answer from the document only."},
                        {"role": "user", "content": f"Document:\n{doc}\n\nQuestion {q}: which bay holds entry {d}-{q}?"}]
            s = stream(client, model, messages, 8)
            if q > 0:
                repeated.append(s)
    return {"rag_ttft_ms": _mean(s.ttft_ms for s in repeated)}


def long_prefix(client, model: str) -> dict:
    prefix = system_prompt(1900).replace("Section", "Chapter")
    probes = []
    for q in range(4):
        messages = [{"role": "system", "content": prefix}, {"role": "user", "content": f"Probe {q}: which aisle?"}]
        s = stream(client, model, messages, 4)
        if q > 0:  # the first one fills the cache
            probes.append(s)
    return {"long_prefix_ttft_ms": _mean(s.ttft_ms for s in probes)}


def decode(client, model: str, streams: int, tokens: int = 128) -> float:
    """Aggregate tokens/s of `streams` concurrent replies, after each one's first token."""
    results: list[Stream] = []

    def worker(i: int) -> None:
        messages = [{"role": "user", "content": f"Stream {i}: tell a long story about a lighthouse keeper."}]
        results.append(stream(client, model, messages, tokens, ignore_eos=True))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = min(s.chunk_times[0] for s in results)
    last = max(s.chunk_times[-1] for s in results)
    return sum(s.tokens - 1 for s in results) / (last - first)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def run_workloads(url: str, skip: set[str], repeats: int) -> dict:
    client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    stream(client, model, [{"role": "user", "content": "warm up"}], 4)
    out: dict[str, float] = {}
    if "chat" not in skip:
        out.update(chat(client, model))
    if "rag" not in skip:
        out.update(rag(client, model))
    if "long" not in skip:
        out.update(long_prefix(client, model))
    if "decode" not in skip:
        for n in (1, 4):
            out[f"decode_{n}_tok_s"] = max(decode(client, model, n) for _ in range(repeats))
    return out


def start_llama(binary: str, model: str, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
           "-np", "4", "-c", "32768", "--slot-prompt-similarity", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited during start-up: {' '.join(cmd)}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)  # polling a starting process, not a measurement
    proc.terminate()
    raise SystemExit("llama-server did not start")


# metric -> (label, target ratio ours/theirs, True when lower is better)
TARGETS = {
    "decode_1_tok_s": ("decode, one stream (tok/s)", 1.0, False),
    "decode_4_tok_s": ("decode, four streams (tok/s)", 1.5, False),
    "chat_reply_ms": ("later chat turn, first token + 32 tokens (ms)", 0.6, True),
    "chat_ttft_ms": ("later chat turn, first token (ms)", 0.25, True),
    "rag_ttft_ms": ("RAG, repeated document, first token (ms)", None, True),
    "long_prefix_ttft_ms": ("long prefix (~1,900 tokens), first token (ms)", None, True),
}


def table(ours: dict, theirs: dict) -> str:
    lines = ["| | ours | llama-server | ours / llama-server | target | met |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for metric, (label, target, lower) in TARGETS.items():
        if metric not in ours:
            continue
        ratio = ours[metric] / theirs[metric]
        goal = "-" if target is None else f"{'<=' if lower else '>='} {target}"
        met = "-" if target is None else ("yes" if (ratio <= target if lower else ratio >= target) else "no")
        lines.append(f"| {label} | {ours[metric]:.1f} | {theirs[metric]:.1f} | {ratio:.2f} | {goal} | {met} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama-server", required=True, help="path of a llama-server binary")
    p.add_argument("--model", help="GGUF file for both (default: the embedded SmolLM2 Q4_1)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="llama-server threads (default: all cores)")
    p.add_argument("--ours-option", action="append", default=[], help="extra `promptcache serve` option (repeatable)")
    p.add_argument("--skip", default="", help="comma-separated workloads to skip: chat,rag,long,decode")
    p.add_argument("--repeats", type=int, default=2, help="decode runs per stream count (best kept)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not os.access(args.llama_server, os.X_OK):
        raise SystemExit(f"error: {args.llama_server} is not an executable llama-server")
    from promptcache.model.source import open_model

    model = str(open_model(args.model).path)
    skip = set(filter(None, args.skip.split(",")))
    results = {}
    for name in ("llama-server", "ours"):
        if name == "ours":
            options = ["--model", model, *[o for opt in args.ours_option for o in opt.split()]]
            proc, url = serve(options)
        else:
            proc, url = start_llama(args.llama_server, model, args.threads)
        try:
            results[name] = run_workloads(url, skip, args.repeats)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(table(results["ours"], results["llama-server"]))


if __name__ == "__main__":
    main()
