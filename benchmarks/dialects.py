"""Time to first token of a cached prefix in each dialect: OpenAI chat, OpenAI Responses (with
previous_response_id), and Anthropic Messages (with a cache_control breakpoint), on a live
server with the embedded SmolLM2.

For each dialect and repeat, a fresh ~1,000-token system prompt (unique per run, so nothing
is cached) is sent with one question (cold), then with another (warm: the prefix is read from
the cache). Figures are best-of-repeats TTFT, measured to the first streamed text, and their
ratio within this run; the warm request's cached tokens come from its usage.

    .venv/bin/python benchmarks/dialects.py [--repeats 3] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.live_server import serve  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"
SYSTEM = " ".join(f"Rule {i}: answer politely, cite section {i * 7} of the handbook, never guess." for i in range(60))


def body(dialect: str, system: str, question: str, previous: str | None = None) -> tuple[str, dict]:
    if dialect == "chat":
        return "/v1/chat/completions", {"messages": [{"role": "system", "content": system},
                                                     {"role": "user", "content": question}],
                                        "max_tokens": 4, "stream": True,
                                        "stream_options": {"include_usage": True}}
    if dialect == "responses":
        return "/v1/responses", {"instructions": system, "input": question, "max_output_tokens": 4, "stream": True,
                                 "previous_response_id": previous}
    return "/v1/messages", {"system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                            "messages": [{"role": "user", "content": question}], "max_tokens": 4, "stream": True}


def timed(url: str, dialect: str, system: str, question: str, previous: str | None = None) -> tuple[float, int, str]:
    """(seconds to the first streamed text, cached prompt tokens, response id)."""
    path, payload = body(dialect, system, question, previous)
    start, first, cached, rid = time.perf_counter(), None, 0, ""
    with httpx.stream("POST", url + path, json={"model": MODEL, "temperature": 0, **payload}, timeout=600) as r:
        cached = int(r.headers.get("x-cache-hit-tokens", 0))
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            text = (event.get("choices") or [{}])[0].get("delta", {}).get("content") or event.get("delta")
            if first is None and isinstance(text, (str, dict)) and text:
                first = time.perf_counter() - start
            rid = (event.get("response") or {}).get("id", rid)
    return first if first is not None else time.perf_counter() - start, cached, rid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--url", help="a running server (default: start one on the embedded model)")
    args = parser.parse_args()
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    config.write_text('responses_db = ":memory:"\n')  # stored responses live with this run only
    proc, url = (None, args.url) if args.url else serve(["--config", str(config)])
    try:
        print(f"{'dialect':<10} {'cold TTFT ms':>13} {'warm TTFT ms':>13} {'warm/cold':>10} {'cached':>7}")
        for dialect in ("chat", "responses", "messages"):
            cold, warm, cached = [], [], 0
            for rep in range(args.repeats):
                system = f"[{dialect} {rep} {time.time_ns()}] {SYSTEM}"
                t_cold, _, rid = timed(url, dialect, system, "Which rule comes first?")
                previous = rid if dialect == "responses" else None
                t_warm, cached, _ = timed(url, dialect, system, "And which one is last?", previous)
                cold.append(t_cold)
                warm.append(t_warm)
            c, w = min(cold), min(warm)
            print(f"{dialect:<10} {c * 1000:>13.0f} {w * 1000:>13.0f} {w / c:>10.2f} {cached:>7}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
