"""Benchmark a live promptcache server through the official openai client.

Two measurements:
1. Continuous batching: 1, 4 and 8 concurrent streaming clients; aggregate decode tokens/s and
   mean time-to-first-token (TTFT). Target: 8 clients >= 4x the 1-client throughput.
2. Multi-turn chat: 4 conversations x 4 turns sharing a ~1,000-token system prompt, each turn
   adding ~90 new tokens, with the prefix cache on and off (off = the per-request
   `caching: {"enabled": false}` extension). Reported: mean TTFT of turns 2..4.
   Target: cache-on <= 0.1x cache-off, and < 190 ms.

    python benchmarks/server.py                 # starts `promptcache serve` on a free port
    python benchmarks/server.py --url http://127.0.0.1:8000 --json
    python benchmarks/server.py --serving-path [--quantize int8]

`--serving-path` measures instead what the serving path costs one stream: the engine's
in-process decode (step() in a loop) and the same reply streamed from a started server, taking
turns, best of `--repeats`; tokens/s after the first token. Target: server >= 0.9x engine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.live_server import serve  # noqa: E402

SYSTEM_WORDS = (
    "You are the support assistant for a hardware store. Follow the store handbook: greet the "
    "customer, answer with the aisle and shelf of each product, mention current discounts, and "
    "never invent stock levels. "
)


@dataclass
class StreamResult:
    ttft_s: float
    completion_tokens: int
    cached_tokens: int


def stream_once(client: openai.OpenAI, model: str, messages: list[dict], max_tokens: int, **extra) -> tuple[StreamResult, str]:
    """One streaming chat request; TTFT is taken at the first chunk carrying content."""
    start = time.perf_counter()
    ttft = None
    parts: list[str] = []
    usage = None
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=extra or None,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            ttft = ttft or time.perf_counter() - start
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    ttft = ttft or time.perf_counter() - start
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return StreamResult(ttft, usage.completion_tokens, cached or 0), "".join(parts)


def concurrency_run(client, model: str, clients: int, requests_each: int, max_tokens: int) -> dict:
    results: list[StreamResult] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for r in range(requests_each):
            messages = [{"role": "user", "content": f"Client {i} request {r}: write a long story about a lighthouse."}]
            res, _ = stream_once(client, model, messages, max_tokens, ignore_eos=True)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r.completion_tokens for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "decode_tokens_per_s": tokens / wall,
        "mean_ttft_ms": 1000 * sum(r.ttft_s for r in results) / len(results),
    }


def system_prompt(target_tokens: int = 1000) -> str:
    words_per_copy = len(SYSTEM_WORDS.split())
    copies = max(1, int(target_tokens / (words_per_copy * 1.3)))
    return " ".join(f"Section {i}. {SYSTEM_WORDS}" for i in range(copies))


def user_turn(conv: int, turn: int) -> str:
    # 81 tokens of new text per turn, different for every conversation and turn; with the chat
    # template and the previous reply's unfinished block, about 90 tokens to compute per turn
    # (the probe: ~90 new tokens on top of ~1,400 cached).
    items = ", ".join(f"item {conv}-{turn}-{k} in size {k * 3}" for k in range(5))
    return f"Conversation {conv}, turn {turn}: where do I find {items}? Please list aisles."


def multi_turn_run(client, model: str, cache_on: bool, reply_tokens: int, system: str) -> dict:
    extra = {} if cache_on else {"caching": {"enabled": False}}
    convs = [[{"role": "system", "content": system}] for _ in range(4)]
    later_turns: list[StreamResult] = []
    for turn in range(4):
        for c, messages in enumerate(convs):
            messages.append({"role": "user", "content": user_turn(c, turn)})
            res, text = stream_once(client, model, messages, reply_tokens, **extra)
            messages.append({"role": "assistant", "content": text})
            if turn > 0:
                later_turns.append(res)
    return {
        "cache": "on" if cache_on else "off",
        "mean_ttft_turns_2_4_ms": 1000 * sum(r.ttft_s for r in later_turns) / len(later_turns),
        "mean_cached_tokens": sum(r.cached_tokens for r in later_turns) / len(later_turns),
    }


def start_server(args) -> tuple[subprocess.Popen, str]:
    options = ["--max-batch-size", "8", "--device", args.device] + (["--model", args.model] if args.model else [])
    options += ["--quantize", args.quantize] if args.quantize else []
    options += ["--decode-threads", str(args.decode_threads)] if args.decode_threads else []
    return serve(options)


SERVING_MESSAGES = [{"role": "user", "content": "Tell a long story about a lighthouse keeper."}]


def engine_decode(engine, tokens: int) -> float:
    """tokens/s of one greedy reply stepped in this process, after its first token. Stepped on
    a second thread, as the server steps it: torch's OpenMP team of the main thread behaved
    differently on a busy machine (docs/benchmarks.md, "The serving path")."""
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(_engine_decode(engine, tokens)))
    thread.start()
    thread.join()
    return result[0]


def _engine_decode(engine, tokens: int) -> float:
    from promptcache.engine.api import CacheOptions, Request, SamplingParams

    prompt = engine.tokenizer.encode(engine.tokenizer.apply_chat_template(SERVING_MESSAGES), add_special_tokens=False)
    sampling = SamplingParams(max_tokens=tokens, ignore_eos=True)
    engine.add_request(Request(f"path-{time.monotonic_ns()}", prompt, sampling, CacheOptions(enabled=False)))
    times = []
    while engine.has_unfinished():
        times += [time.perf_counter() for out in engine.step() if out.new_token_ids]
    return (len(times) - 1) / (times[-1] - times[0])


def server_decode(url: str, tokens: int) -> float:
    from benchmarks.peer import stream

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    s = stream(client, client.models.list().data[0].id, SERVING_MESSAGES, tokens, ignore_eos=True)
    return (s.tokens - 1) / (s.chunk_times[-1] - s.chunk_times[0])


def serving_path(args) -> dict:
    """The engine in this process and a started server, in turns; best tokens/s of each."""
    from promptcache.engine.engine import Engine

    engine = Engine.from_model(args.model, device=args.device, quantize=args.quantize, cache_config=None,
                               decode_threads=args.decode_threads)
    engine_decode(engine, 8)  # first-call costs
    proc, url = start_server(args)
    try:
        server_decode(url, 8)
        best = {"engine_tok_s": 0.0, "server_tok_s": 0.0}
        for _ in range(args.repeats):
            best["engine_tok_s"] = max(best["engine_tok_s"], engine_decode(engine, args.decode_tokens))
            best["server_tok_s"] = max(best["server_tok_s"], server_decode(url, args.decode_tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    best["server_over_engine"] = best["server_tok_s"] / best["engine_tok_s"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--model", help="model for the started server (default: embedded SmolLM2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--decode-tokens", type=int, default=64, help="tokens per request in the batching run")
    parser.add_argument("--requests-each", type=int, default=2)
    parser.add_argument("--reply-tokens", type=int, default=16, help="assistant reply length in the chat run")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quantize", choices=["int8"], help="the started server's (and engine's) --quantize")
    parser.add_argument("--serving-path", action="store_true", help="engine in-process vs server, one stream")
    parser.add_argument("--decode-threads", type=int, help="the server's (and engine's) --decode-threads (default: its own)")
    parser.add_argument("--repeats", type=int, default=3, help="turns of each in --serving-path")
    args = parser.parse_args()
    if args.serving_path:
        report = serving_path(args)
        print(json.dumps(report, indent=2) if args.json else
              "one stream, tok/s after the first token: engine {engine_tok_s:.1f}, server {server_tok_s:.1f}, "
              "server / engine {server_over_engine:.2f} (target >= 0.9)".format(**report))
        return

    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args)
    try:
        client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=args.api_key, max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        stream_once(client, model, [{"role": "user", "content": "warm up"}], 4)  # first-call costs
        batching = [concurrency_run(client, model, c, args.requests_each, args.decode_tokens) for c in (1, 4, 8)]
        system = system_prompt()
        # Off first, so the cache-on run cannot benefit from anything the off run left behind
        # (it stores nothing anyway); each conversation's system prompt is shared by all four.
        chat = [multi_turn_run(client, model, on, args.reply_tokens, system) for on in (False, True)]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    speedup = batching[-1]["decode_tokens_per_s"] / batching[0]["decode_tokens_per_s"]
    ratio = chat[1]["mean_ttft_turns_2_4_ms"] / chat[0]["mean_ttft_turns_2_4_ms"]
    report = {
        "model": model, "batching": batching, "multi_turn": chat,
        "batching_speedup_8_vs_1": speedup, "ttft_ratio_cache_on_vs_off": ratio,
        "targets_met": {"speedup_ge_4": speedup >= 4, "ttft_ratio_le_0_1": ratio <= 0.1,
                        "ttft_on_lt_190ms": chat[1]["mean_ttft_turns_2_4_ms"] < 190},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"model: {model}\n")
    print(f"{'clients':>8} {'requests':>9} {'decode tok/s':>13} {'mean TTFT ms':>13}")
    for row in batching:
        print(f"{row['clients']:>8} {row['requests']:>9} {row['decode_tokens_per_s']:>13.1f} {row['mean_ttft_ms']:>13.1f}")
    print(f"8-client / 1-client throughput: {speedup:.2f}x (target >= 4x)\n")
    print(f"{'cache':>6} {'TTFT turns 2-4 ms':>18} {'cached tokens':>14}")
    for row in chat:
        print(f"{row['cache']:>6} {row['mean_ttft_turns_2_4_ms']:>18.1f} {row['mean_cached_tokens']:>14.0f}")
    print(f"cache-on / cache-off TTFT: {ratio:.3f} (target <= 0.1, and on < 190 ms)")
    print("targets met:", asdict_like(report["targets_met"]))


def asdict_like(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


if __name__ == "__main__":
    main()
