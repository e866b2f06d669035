"""Constrained decoding's cost: decode under a JSON schema against unconstrained decode.

    python benchmarks/structured.py [--streams 1,4] [--tokens 48] [--repeats 3] [--json]

In process, on the embedded model in the serving default. Each run decodes `--tokens` tokens
for each of `--streams` concurrent requests, unconstrained (ignore_eos) or under a schema whose
one string property has a minLength no reply of that length can reach, so both runs produce the
same number of tokens. Decode rate counts the tokens after each request's first one, over the
time from the first step that decodes to the last; variants alternate, and the best of
`--repeats` is kept. Also reported: the compile time of a first and of a repeated schema (a
repeat is a cache hit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from promptcache.engine.api import CacheOptions, Request, SamplingParams  # noqa: E402
from promptcache.engine.engine import Engine  # noqa: E402
from promptcache.engine.structured.spec import StructureSpec  # noqa: E402

SCHEMA = {"type": "object", "required": ["story"], "additionalProperties": False,
          "properties": {"story": {"type": "string", "minLength": 2000}}}
PROMPT = "Write a long story about a lighthouse keeper, as JSON with one field, story."


def decode_rate(engine: Engine, streams: int, tokens: int, structure) -> float:
    prompt = engine.tokenizer.encode(engine.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}]),
                                     add_special_tokens=False)
    for i in range(streams):
        engine.add_request(Request(f"r{i}", prompt, SamplingParams(max_tokens=tokens, ignore_eos=True),
                                   CacheOptions(enabled=False), structure=structure))
    first = last = None
    decoded = 0
    while engine.has_unfinished():
        outputs = engine.step()
        now = time.perf_counter()
        new = [o for o in outputs if o.new_token_ids and o.num_generated_tokens > 1]
        if new:
            first = first if first is not None else now
            last = now
            decoded += len(new)
    return (decoded - streams) / (last - first)  # the first decoding step's tokens start the clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,4")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    engine = Engine.from_model(None, device="cpu", max_batch_size=max(streams), progress=False)
    spec = StructureSpec("json_schema", json.dumps(SCHEMA))
    engine.grammars.lltokenizer()  # the one-off tokenizer setup is not a schema's compile time
    start = time.perf_counter()
    compiled = engine.grammars.compile(spec)
    first_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    engine.grammars.compile(spec)
    repeat_ms = (time.perf_counter() - start) * 1e3
    rows = []
    for n in streams:
        best = {"free": 0.0, "schema": 0.0}
        for _ in range(args.repeats):
            best["free"] = max(best["free"], decode_rate(engine, n, args.tokens, None))
            best["schema"] = max(best["schema"], decode_rate(engine, n, args.tokens, compiled))
        rows.append({"streams": n, "free_tok_s": best["free"], "schema_tok_s": best["schema"],
                     "ratio": best["schema"] / best["free"]})
    result = {"compile_first_ms": first_ms, "compile_repeat_ms": repeat_ms, "decode": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"schema compile: first {first_ms:.1f} ms, repeated {repeat_ms:.3f} ms")
    print(f"{'streams':>8}{'free tok/s':>12}{'schema tok/s':>14}{'ratio':>8}")
    for row in rows:
        print(f"{row['streams']:>8}{row['free_tok_s']:>12.1f}{row['schema_tok_s']:>14.1f}{row['ratio']:>8.2f}")


if __name__ == "__main__":
    main()
