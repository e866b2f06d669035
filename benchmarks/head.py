"""The output head's cost: float32 logits against the old bfloat16 head.

    python benchmarks/head.py [--rows 1,4,8] [--repeats 7] [--calls 20] [--json]

Times one product of `rows` hidden states with SmolLM2's head shape (49,152 x 576, random
weights: speed does not depend on the values), taking turns between the variants call by call,
and keeps the fastest of `--repeats` rounds of `--calls` calls each:

- `OutputHead`: what the model uses now (promptcache/model/llama.py), float32 in and out; on CPU
  a float32 weight through oneDNN's float32 kernel.
- `bf16 then .float()`: the head before issue 19, a bfloat16 product whose output is rounded to
  bfloat16 and only then widened. Near a logit of 25 its step is 0.125, so near-ties become
  exact ties.
- `F.linear float32`: a float32 weight through torch's default CPU GEMM (MKL).
- `x @ Wt float32`: the same with the weight stored transposed, as the model stores its other
  float32 weights.

The model pads a product to a row count whose rows are bitwise those of a larger product
(promptcache/model/row_invariance.py), so the column "padded" gives what a batch of `rows`
costs each variant once padded to its own nearest such count, and "vs bf16" compares those.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine  # noqa: E402
from promptcache.model.head import OutputHead  # noqa: E402
from promptcache.model.row_invariance import invariant_rows, padded_rows  # noqa: E402

VOCAB, HIDDEN = 49152, 576  # SmolLM2-135M's tied head


def variants(weight: torch.Tensor) -> dict:
    """name -> callable(x float32 (rows, E)) -> logits (rows, V) float32."""
    device = weight.device
    head = OutputHead(weight, device, torch.bfloat16)
    low = weight.to(torch.bfloat16).contiguous()
    full = weight.float().contiguous()
    full_t = full.t().contiguous()
    return {
        "OutputHead (float32)": head,
        "bf16 then .float() (old)": lambda x: F.linear(x.to(torch.bfloat16), low).float(),
        "F.linear float32": lambda x: F.linear(x, full),
        "x @ Wt float32": lambda x: x @ full_t,
    }


def measure(rows_list: list[int], repeats: int, calls: int) -> list[dict]:
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN, generator=gen) * 0.02
    heads = variants(weight)
    invariant = {name: invariant_rows(head, HIDDEN, torch.float32, device) for name, head in heads.items()}
    padded = {(name, rows): padded_rows(rows, invariant[name]) for name in heads for rows in rows_list}
    counts = sorted(set(rows_list) | set(padded.values()))
    inputs = {rows: torch.randn(rows, HIDDEN, generator=gen) for rows in counts}
    best = {(name, rows): float("inf") for name in heads for rows in counts}
    for name, head in heads.items():  # warm up each kernel (oneDNN builds its primitive once)
        for x in inputs.values():
            head(x)
    for _ in range(repeats):
        for rows, x in inputs.items():
            for name, head in heads.items():  # take turns, so load hits every variant alike
                start = time.perf_counter()
                for _ in range(calls):
                    head(x)
                best[name, rows] = min(best[name, rows], (time.perf_counter() - start) / calls)
    results = []
    for rows in rows_list:
        base = best["bf16 then .float() (old)", padded["bf16 then .float() (old)", rows]]
        for name in heads:
            pad = padded[name, rows]
            results.append({"rows": rows, "head": name, "ms": best[name, rows] * 1e3, "padded_rows": pad,
                            "padded_ms": best[name, pad] * 1e3, "vs_bf16": best[name, pad] / base})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    results = measure(rows, args.repeats, args.calls)
    if args.json:
        print(json.dumps({"machine": machine.describe(torch.device("cpu")), "results": results}, indent=2))
        return
    print(f"# {machine.describe(torch.device('cpu'))}; ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'default')}")
    print("| rows | head | time | padded (rows) | vs bf16 head, padded |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['rows']} | {r['head']} | {r['ms']:.2f} ms | {r['padded_ms']:.2f} ms ({r['padded_rows']}) "
              f"| {r['vs_bf16']:.2f} |")


if __name__ == "__main__":
    main()
