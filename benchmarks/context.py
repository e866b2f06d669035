"""A 4,000-token document kept as a session, then 10 questions about it: mean time-to-first-token
with the session against the same questions with no cache (SmolLM2, the real model, served).

    .venv/bin/python benchmarks/context.py            # table
    .venv/bin/python benchmarks/context.py --json

One server (`promptcache serve`, the serving defaults) started here. "session": POST
/v1/context with the document, then each question as a chat turn naming the session (the
turn sends the whole conversation so far, as every chat client does). "no cache": the same
10 requests, each in a fresh namespace (a new `cache_salt`), so nothing is reused. TTFT is the
time to the first streamed content chunk, client side. Goal: session <= 0.05x no cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import openai  # noqa: E402
from live_server import serve  # noqa: E402

QUESTIONS = [f"In one word: what does clause {i} of the contract cover?" for i in range(1, 11)]
TARGET = 0.05


def document(words: int = 2600) -> str:
    clauses = [f"Clause {i}. The supplier shall deliver item {i * 13} within {i % 9 + 2} days, keep records "
               f"for {i % 5 + 1} years, and notify the buyer of any change to section {i * 7}." for i in range(1, 200)]
    out = []
    for clause in clauses:
        out.append(clause)
        if len(" ".join(out).split()) > words:
            break
    return "Supply contract.\n" + "\n".join(out)


def ttft(client: openai.OpenAI, model: str, messages: list[dict], **extra) -> tuple[float, str, int]:
    start = time.perf_counter()
    first, text, cached = None, [], 0
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}, **extra)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - start
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            cached = chunk.usage.prompt_tokens_details.cached_tokens
    return first if first is not None else time.perf_counter() - start, "".join(text), cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    proc, url = serve(["--cache-mb", "2048"])  # room to pin the whole document
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        system = {"role": "system", "content": document()}
        created = httpx.post(url + "/v1/context", json={"model": model, "messages": [system], "ttl": 3600},
                             timeout=600).json()
        sid = created["session_id"]
        results = {"document_tokens": created["prompt_tokens"], "session_cached_tokens": created["cached_tokens"]}
        conversation = [system]
        session, cold, cached = [], [], []
        for question in QUESTIONS:
            conversation.append({"role": "user", "content": question})
            t, reply, hit = ttft(client, model, conversation, extra_body={"session_id": sid})
            session.append(t)
            cached.append(hit)
            conversation.append({"role": "assistant", "content": reply})
        conversation = [system]
        for question, turn in zip(QUESTIONS, range(len(QUESTIONS))):
            conversation.append({"role": "user", "content": question})
            t, reply, _ = ttft(client, model, conversation, extra_body={"cache_salt": uuid.uuid4().hex})
            cold.append(t)
            conversation.append({"role": "assistant", "content": reply})
        results.update(session_ttft_s=sum(session) / len(session), no_cache_ttft_s=sum(cold) / len(cold),
                       cached_tokens=cached)
        results["ratio"] = results["session_ttft_s"] / results["no_cache_ttft_s"]
        results["target_met"] = results["ratio"] <= TARGET
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"document: {results['document_tokens']} tokens, {results['session_cached_tokens']} pinned by the session")
    print(f"mean TTFT over {len(QUESTIONS)} questions: session {results['session_ttft_s'] * 1000:.0f} ms, "
          f"no cache {results['no_cache_ttft_s'] * 1000:.0f} ms, ratio {results['ratio']:.3f}x "
          f"(target <= {TARGET}x: {'met' if results['target_met'] else 'missed'})")
    print(f"cached tokens per turn: {results['cached_tokens']}")


if __name__ == "__main__":
    main()
