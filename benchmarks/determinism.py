"""Why a cache hit changed greedy output in bfloat16, and what the fix costs.

Part 1, the root cause, on SmolLM2's shapes:
- matmul rows: does a row's result depend on how many rows share the call? (bf16, fp32)
- SDPA rows: torch's CPU flash attention, causal, over the same first N tokens, in calls of
  different lengths (what a cold prefill and a warm suffix do) -- and the grid attention that
  replaced it for prefill (promptcache/model/attention.py);
- end to end: cold prefill vs prefix KV saved by a request of another length plus the suffix,
  with SDPA and with the grid, counting cases whose logits differ.
Part 2, the cost, measured in one run (min of --repeats): prefill throughput and warm
time-to-first-token with grid attention against SDPA, and decode at batch 1 and 8 with
--deterministic (row padding, int8 at every batch size) against without.

    .venv/bin/python benchmarks/determinism.py [--cases 12] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F

from promptcache.engine.loading import load_model
from promptcache.model.attention import grid_prefill_attention
from promptcache.model.llama import LlamaModel
from promptcache.model.row_invariance import invariant_rows
from promptcache.model.source import open_model


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def matmul_rows() -> dict:
    """Row counts (1..16) whose rows differ from a large call, per dtype, on SmolLM2's MLP
    shapes (gate_up: 576 in, down: 1,536 in)."""
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        for name, (n_out, n_in) in (("gate_up", (3072, 576)), ("down", (576, 1536))):
            weight = (torch.randn(n_out, n_in) * 0.05).to(dtype)
            ok = invariant_rows(lambda x: F.linear(x, weight), n_in, dtype, torch.device("cpu"))
            out[f"{str(dtype).removeprefix('torch.')} {name}"] = sorted(set(range(1, 17)) - ok)
    return out


def attention_rows(short: int = 880, long: int = 1078) -> dict:
    """Max difference of the first `short` rows between a short and a long causal call."""
    torch.manual_seed(0)
    q, k, v = torch.randn(9, long, 64), torch.randn(3, long + 64, 64), torch.randn(3, long + 64, 64)

    def sdpa(n):
        return F.scaled_dot_product_attention(q[None, :, :n], k[None, :, :n], v[None, :, :n], is_causal=True,
                                              enable_gqa=True)[0]

    def grid(n):
        return grid_prefill_attention(q[:, :n], k, v, 0)

    return {name: float((fn(short) - fn(long)[:, :short]).abs().max()) for name, fn in (("sdpa", sdpa), ("grid", grid))}


def end_to_end(model: LlamaModel, cases: int) -> dict:
    """Cases (of `cases`) whose warm logits differ bitwise from the cold path, SDPA vs grid."""
    rng = random.Random(0)
    kv = model.new_kv(3, 4096)
    result = {}
    for mode in ("sdpa", "grid"):
        model.grid_attention = mode == "grid"
        differ = 0
        for _ in range(cases):
            cached = rng.randrange(1, 60) * 16
            tokens = torch.tensor([rng.randrange(200, 40000) for _ in range(cached + rng.randrange(1, 300))])
            cold = model.prefill(tokens, 0, 0, kv)
            model.prefill(tokens[:cached + rng.randrange(0, 40)], 0, 1, kv, want_logits=False)  # an earlier request
            kv[:, :, 2, :, :cached] = kv[:, :, 1, :, :cached]
            differ += not torch.equal(cold, model.prefill(tokens[cached:], cached, 2, kv))
        result[mode] = differ
    model.grid_attention = True
    return result


def costs(det: LlamaModel, fast: LlamaModel, repeats: int) -> dict:
    kv = det.new_kv(8, 2112)
    tokens = torch.randint(200, 40000, (2048,))
    out = {}
    for mode in ("sdpa", "grid"):
        det.grid_attention = mode == "grid"
        for n in (512, 2048):
            out[f"prefill {n} tok/s ({mode})"] = round(n / best_ms(lambda: det.prefill(tokens[:n], 0, 0, kv), repeats) * 1e3)
        # warm time-to-first-token: 2,000 cached tokens in the slot, a 20-token suffix
        out[f"warm ttft 2000+20 ms ({mode})"] = round(best_ms(lambda: det.prefill(tokens[2000:2020], 2000, 0, kv), repeats), 1)
    det.grid_attention = True
    for name, model in (("deterministic", det), ("not deterministic", fast)):
        for batch in (1, 8):
            step = torch.randint(200, 40000, (batch,))
            ms = best_ms(lambda: model.decode(step, [1000] * batch, list(range(batch)), kv), repeats)
            out[f"decode b{batch} tok/s ({name})"] = round(batch / ms * 1e3, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source = open_model(None)
    det = load_model(source, dtype=torch.bfloat16, device=torch.device("cpu"))
    fast = load_model(source, dtype=torch.bfloat16, device=torch.device("cpu"), deterministic=False)
    report = {
        "matmul rows differing from a large call": matmul_rows(),
        "attention: max diff of 880 rows, 880- vs 1078-row call": attention_rows(),
        f"bf16 SmolLM2: warm logits differing from cold, of {args.cases}": end_to_end(det, args.cases),
        "costs (bf16 SmolLM2)": costs(det, fast, args.repeats),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for section, values in report.items():
        print(f"## {section}")
        for key, value in values.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
