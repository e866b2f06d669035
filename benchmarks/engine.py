"""Engine throughput: cold prefill and batched decode, with efficiency against this machine.

    python benchmarks/engine.py [--compare] [--json] [--dtypes float32,bfloat16]
    python benchmarks/engine.py --shape llama-3.1-8b --random-weights --device cuda --compare

Prefill: tokens/s of a cold prefill of 512 and 2,048 tokens through the engine's chunked path,
and its FLOP/s over the peak of a large matmul in the same dtype. Decode: tokens/s of one step
for a batch of 1 and 8 sequences with `--context` tokens each, and bytes read per step (weights
plus KV) over the bandwidth of a large copy. `--compare` runs Hugging Face transformers on the
same weights in the same run (SDPA attention, logits_to_keep=1, its DynamicCache) and prints
ours over theirs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine  # noqa: E402
from benchmarks.shapes import SHAPES, flops_per_prefill, hf_config, random_state_dict, weight_bytes  # noqa: E402
from promptcache.engine.loading import DTYPES, resolve_device  # noqa: E402
from promptcache.model.llama import LlamaModel  # noqa: E402


def load_weights(args, dtype, device):
    if args.shape == "smollm2":
        from promptcache.model.source import open_model

        source = open_model(args.model)
        state = {k: v.to(device=device, dtype=dtype) for k, v in source.load_state_dict().items()}
        return source.config, state
    if not args.random_weights:
        raise SystemExit("error: --shape other than smollm2 needs --random-weights")
    config = SHAPES[args.shape]
    return config, random_state_dict(config, dtype, device)


def ours_timers(config, state, dtype, device, args) -> dict:
    """metric -> (callable returning seconds, tokens per call) for our engine's model."""
    model = LlamaModel(config, state, dtype=dtype, device=device, quantize=args.quantize)
    max_batch = max(args.batches)
    kv = model.new_kv(max_batch, max(max(args.prefill), args.context) + args.steps * (args.repeats + 2) + 8)
    gen = torch.Generator().manual_seed(0)
    timers = {}
    for n in args.prefill:
        tokens = torch.randint(0, config.vocab_size, (n,), generator=gen).to(device)

        def prefill(tokens=tokens, n=n):
            for start in range(0, n, args.chunk):  # the engine's chunking for a prompt alone
                end = min(start + args.chunk, n)
                model.prefill(tokens[start:end], start, 0, kv, want_logits=end == n)

        timers[f"prefill_{n}"] = (lambda f=prefill: _seconds(f, device), n)
    ctx = torch.randint(0, config.vocab_size, (args.context,), generator=gen).to(device)
    model.prefill(ctx, 0, 0, kv)
    for b in range(1, max_batch):
        kv[:, :, b, :, : args.context] = kv[:, :, 0, :, : args.context]
    for batch in args.batches:
        tokens = torch.randint(0, config.vocab_size, (batch,), generator=gen).to(device)

        def decode(tokens=tokens, batch=batch):
            for i in range(args.steps):
                model.decode(tokens, [args.context + i] * batch, list(range(batch)), kv)

        timers[f"decode_b{batch}"] = (lambda f=decode: _seconds(f, device), batch * args.steps)
    return timers


def _seconds(fn, device) -> float:
    machine.sync(device)
    start = time.perf_counter()
    fn()
    machine.sync(device)
    return time.perf_counter() - start


def hf_timers(config, state, dtype, device, args) -> dict:
    """The same metrics for Hugging Face transformers on the same weights."""
    from transformers import DynamicCache, LlamaForCausalLM

    cfg = hf_config(config)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        hf = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    hf.load_state_dict(state, strict=False)
    if config.tie_word_embeddings:
        hf.tie_weights()
    hf.eval()
    gen = torch.Generator().manual_seed(0)
    timers = {}
    for n in args.prefill:
        ids = torch.randint(0, config.vocab_size, (1, n), generator=gen).to(device)

        def prefill(ids=ids):
            with torch.inference_mode():
                hf(ids, logits_to_keep=1)

        timers[f"prefill_{n}"] = (lambda f=prefill: _seconds(f, device), n)
    for batch in args.batches:
        ids = torch.randint(0, config.vocab_size, (batch, args.context), generator=gen).to(device)
        step = torch.randint(0, config.vocab_size, (batch, 1), generator=gen).to(device)

        def decode(ids=ids, step=step):
            with torch.inference_mode():
                cache = DynamicCache(config=hf.config)
                hf(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                return _seconds(lambda: [hf(step, past_key_values=cache, use_cache=True) for _ in range(args.steps)],
                                device)

        timers[f"decode_b{batch}"] = (decode, batch * args.steps)
    return timers


def measure(timers: list[dict], repeats: int) -> list[dict]:
    """Best tokens/s of each metric for each implementation, taking turns call by call so that
    a slow spell of this (shared, noisy) machine hits both alike."""
    best = [dict() for _ in timers]
    for metric in timers[0]:
        for t in timers:
            t[metric][0]()  # warm-up
        for _ in range(repeats):
            for impl, t in enumerate(timers):
                fn, tokens = t[metric]
                best[impl][metric] = max(best[impl].get(metric, 0.0), tokens / fn())
    return best


def efficiency(config, dtype, metric: str, value: float, limits: dict, context: int, quantize: str | None = None) -> float:
    if metric.startswith("prefill_"):
        n = int(metric.split("_")[1])
        return flops_per_prefill(config, n) * value / n / limits["matmul_flops"]
    batch = int(metric.split("_b")[1])
    kv_dtype_bytes = 4 if limits["device"] == "cpu" else torch.tensor([], dtype=dtype).element_size()
    weights = weight_bytes(config, torch.tensor([], dtype=dtype).element_size())
    if quantize == "int8" and batch <= 2:  # layers read as int8; the output head stays bf16
        head = config.vocab_size * config.hidden_size * 2
        weights = (weights - head) // 2 + head
    step_bytes = weights + batch * context * config.kv_bytes_per_token(kv_dtype_bytes)
    return step_bytes * value / batch / limits["copy_bytes"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="smollm2", choices=["smollm2", *SHAPES])
    p.add_argument("--model", default=None, help="model path for --shape smollm2 (default: embedded)")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--prefill", default="512,2048")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--context", type=int, default=512, help="tokens of context per sequence while decoding")
    p.add_argument("--steps", type=int, default=16, help="decode steps timed")
    p.add_argument("--chunk", type=int, default=2048,
                   help="prefill chunk (the engine's max_prefill_chunk, used when nothing else is decoding)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quantize", default=None, choices=["int8"], help="int8 weight-only decode (bf16 only)")
    p.add_argument("--compare", action="store_true", help="also run Hugging Face transformers")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    args.prefill = [int(x) for x in args.prefill.split(",")]
    args.batches = [int(x) for x in args.batches.split(",")]
    device = resolve_device(args.device)
    results = {"machine": machine.describe(device), "shape": args.shape, "device": device.type,
               "quantize": args.quantize, "rows": []}
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        limits = {"device": device.type, "matmul_flops": machine.matmul_peak(dtype, device),
                  "copy_bytes": machine.copy_bandwidth(device)}
        config, state = load_weights(args, dtype, device)
        timers = [ours_timers(config, state, dtype, device, args)]
        if args.compare:
            timers.append(hf_timers(config, state, dtype, device, args))
        measured = measure(timers, args.repeats)
        ours, theirs = measured[0], (measured[1] if args.compare else {})
        del state, timers
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        for metric, value in ours.items():
            results["rows"].append({
                "dtype": name, "metric": metric, "tokens_per_s": value,
                "efficiency": efficiency(config, dtype, metric, value, limits, args.context, args.quantize),
                "transformers_tokens_per_s": theirs.get(metric),
                "ratio_vs_transformers": value / theirs[metric] if metric in theirs else None,
                "matmul_peak_gflops": limits["matmul_flops"] / 1e9,
                "copy_gb_s": limits["copy_bytes"] / 1e9,
            })
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"# {results['machine']} ({results['shape']}, {device.type})")
    print(f"{'dtype':9} {'metric':13} {'tok/s':>9} {'eff.':>6} {'HF tok/s':>9} {'ours/HF':>8}  limits")
    for r in results["rows"]:
        hf = f"{r['transformers_tokens_per_s']:9.1f}" if r["transformers_tokens_per_s"] else f"{'-':>9}"
        ratio = f"{r['ratio_vs_transformers']:8.2f}" if r["ratio_vs_transformers"] else f"{'-':>8}"
        print(f"{r['dtype']:9} {r['metric']:13} {r['tokens_per_s']:9.1f} {r['efficiency']:6.1%} {hf} {ratio}"
              f"  {r['matmul_peak_gflops']:.0f} GFLOP/s, {r['copy_gb_s']:.1f} GB/s")


if __name__ == "__main__":
    main()
