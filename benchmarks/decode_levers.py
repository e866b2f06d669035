"""The CPU decode step, lever by lever, on SmolLM2 in bfloat16 (the serving default).

    python benchmarks/decode_levers.py [--threads 1] [--batches 1,4] [--context 256] [--json]
        [--variants before,prepacked,prepacked + pad once,+ float16 head,+ int8,+ int4,+ int8+head,+ int4+head]

Variants, each built from the same weights and timed in turns (best of `--repeats`):
- before: plain bfloat16 weights, every product padding its own rows (the code before issue 9);
- prepacked: weights reordered once for oneDNN (llama.prepack), products still padding alone;
- prepacked + pad once: the step padded to a batch-invariant row count once;
  these three hold the output head in float32 (the default before the float16 head);
- + float16 head: the output head's weights in float16, float32 arithmetic (head.py; the default now);
- + int8, + int4, + int8+head, + int4+head: the default plus that `--quantize` (quant.py).
The first three give bitwise the same logits (checked here). With `--threads 1` the figure
is the thread's CPU time per step, which a busy shared machine disturbs least; otherwise it is
wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import promptcache.model.llama as llama  # noqa: E402
from promptcache.model.source import open_model  # noqa: E402


VARIANTS = ["before", "prepacked", "prepacked + pad once", "+ float16 head", "+ int8", "+ int4", "+ int8+head", "+ int4+head"]


def build(config, state, variant: str) -> llama.LlamaModel:
    pack = llama.prepack
    if variant == "before":
        llama.prepack = lambda weight: weight
    try:
        quantize = variant.removeprefix("+ ") if variant.startswith("+ int") else None
        head = None if variant.startswith("+ ") else "float32"
        model = llama.LlamaModel(config, state, dtype=torch.bfloat16, quantize=quantize, head=head)
    finally:
        llama.prepack = pack
    if variant == "before":
        model.prepacked = False
    if variant in ("before", "prepacked"):
        model._decode_rows = lambda batch: batch  # each product pads its own rows
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from the list above")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    source = open_model(None)
    state = source.load_state_dict()
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"error: unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    models = {}
    for v in variants:
        start = time.perf_counter()
        models[v] = build(source.config, state, v)
        print(f"built {v} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    gen = torch.Generator().manual_seed(0)
    context = torch.randint(0, source.config.vocab_size, (args.context,), generator=gen)
    caches = {}
    for v, model in models.items():
        caches[v] = model.new_kv(max(batches), args.context + args.steps * (args.repeats + 1) + 1)
        for b in range(max(batches)):
            model.prefill(context, 0, b, caches[v], want_logits=False)
    results = {v: {} for v in variants}
    logits = {}
    for batch in batches:
        tokens = torch.randint(0, source.config.vocab_size, (batch,), generator=gen)
        for r in range(args.repeats + 1):  # the first round warms up
            for v, model in models.items():
                start = clock()
                for s in range(args.steps):
                    out = model.decode(tokens, [args.context + s] * batch, list(range(batch)), caches[v])
                ms = (clock() - start) / args.steps * 1000
                logits[v] = out
                if r:
                    results[v][f"b{batch}_ms"] = min(results[v].get(f"b{batch}_ms", ms), ms)
        plain = [v for v in variants if not v.startswith("+ ")]
        same = all(torch.equal(logits[v], logits[plain[0]]) for v in plain)
        results["bfloat16 variants bitwise equal, batch %d" % batch] = same
    if args.json:
        print(json.dumps(results, indent=2))
        return
    kind = "thread CPU" if args.threads == 1 else "wall"
    print(f"ms per decode step ({kind} time, {args.threads} thread(s), {args.context} tokens of context)")
    for v in variants:
        row = results[v]
        print(f"{v:22}" + "".join(f"  b{b}: {row[f'b{b}_ms']:7.1f} ({results[variants[0]][f'b{b}_ms'] / row[f'b{b}_ms']:.2f}x)"
                                  for b in batches))
    for key, value in results.items():
        if key.startswith("bfloat16"):
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
