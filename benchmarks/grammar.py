"""Choosing the grammar library: llguidance against xgrammar on SmolLM2's tokenizer.

    python benchmarks/grammar.py [--repeats 5] [--json]

For each library: the one-off tokenizer setup, the compile time of a first and a repeated JSON
schema (a repeat is a cache hit in our compiler; the library's own figure is for a fresh
compile), and the time to compute one token mask while walking a 40-token valid reply. xgrammar
is measured only where it is importable: it is not a project dependency (on Linux it pulls
triton); install it into a separate directory and put that on PYTHONPATH to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from promptcache.engine.structured.compiler import GrammarCompiler  # noqa: E402
from promptcache.engine.structured.constraint import Constraint, MaskBatch  # noqa: E402
from promptcache.engine.structured.spec import StructureSpec  # noqa: E402
from promptcache.model.source import embedded_model_path, open_model  # noqa: E402

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags", "address"],
          "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0},
                         "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                         "address": {"type": "object", "required": ["city"],
                                     "properties": {"city": {"type": "string"}, "zip": {"type": "string",
                                                                                       "pattern": "^[0-9]{5}$"}}}}}
REPLY = '{"name": "Alice Example", "age": 30, "tags": ["a", "bb"], "address": {"city": "Paris", "zip": "75001"}}'


def clock(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def llguidance_figures(tokenizer, reply_ids: list[int], repeats: int) -> dict:
    compiler = GrammarCompiler(tokenizer)
    setup, _ = clock(compiler.lltokenizer)
    spec = StructureSpec("json_schema", json.dumps(SCHEMA))
    first, compiled = clock(lambda: compiler.compile(spec))
    repeat, _ = clock(lambda: compiler.compile(spec))
    batch = MaskBatch(tokenizer.vocab_size)
    best = float("inf")
    for _ in range(repeats):
        constraint = Constraint(compiled)
        start = time.perf_counter()
        for token in reply_ids:
            batch.wait(batch.start([constraint]))
            assert constraint.accept(token), constraint.error
        best = min(best, (time.perf_counter() - start) / len(reply_ids))
    return {"setup_s": setup, "compile_first_ms": first * 1e3, "compile_repeat_ms": repeat * 1e3,
            "mask_us_per_token": best * 1e6}


def xgrammar_figures(tokenizer, reply_ids: list[int], repeats: int) -> dict | None:
    try:
        import xgrammar as xgr
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return None
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend)
    setup, info = clock(lambda: xgr.TokenizerInfo.from_huggingface(hf, vocab_size=tokenizer.vocab_size,
                                                                    stop_token_ids=list(tokenizer.eos_token_ids)))
    compiler = xgr.GrammarCompiler(info)
    first, compiled = clock(lambda: compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False))
    fresh, _ = clock(lambda: xgr.GrammarCompiler(info, cache_enabled=False).compile_json_schema(
        json.dumps(SCHEMA), any_whitespace=False))
    bitmask = xgr.allocate_token_bitmask(1, tokenizer.vocab_size)
    best = float("inf")
    for _ in range(repeats):
        matcher = xgr.GrammarMatcher(compiled)
        start = time.perf_counter()
        for token in reply_ids:
            matcher.fill_next_token_bitmask(bitmask)
            assert matcher.accept_token(token)
        best = min(best, (time.perf_counter() - start) / len(reply_ids))
    return {"setup_s": setup, "compile_first_ms": first * 1e3, "compile_repeat_ms": fresh * 1e3,
            "mask_us_per_token": best * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tokenizer = open_model(embedded_model_path()).tokenizer
    reply_ids = tokenizer.encode(REPLY, add_special_tokens=False)
    rows = {"llguidance": llguidance_figures(tokenizer, reply_ids, args.repeats),
            "xgrammar": xgrammar_figures(tokenizer, reply_ids, args.repeats)}
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'library':<12}{'setup s':>9}{'compile ms':>12}{'repeat ms':>11}{'mask us/token':>15}")
    for name, row in rows.items():
        if row is None:
            print(f"{name:<12}  not importable here")
            continue
        print(f"{name:<12}{row['setup_s']:>9.2f}{row['compile_first_ms']:>12.2f}{row['compile_repeat_ms']:>11.3f}"
              f"{row['mask_us_per_token']:>15.1f}")


if __name__ == "__main__":
    main()
