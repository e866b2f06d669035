"""Where a CPU decode step's time goes, on SmolLM2 in bfloat16 (the serving default).

    python benchmarks/decode_profile.py [--batches 1,4] [--context 256] [--steps 8] [--head float32] [--json]

One thread, thread CPU time, best of `--repeats` rounds (a busy shared machine disturbs thread
CPU time least; torch.profiler's times are wall times, several times the work under load). The
step is timed whole, then each kind of work it does is replayed alone, as the step calls it,
at the step's padded row count and with the model's own weights and KV:
- layer products: the 4 products of each of the 30 layers;
- head: the output head (its final norm is counted with the norms);
- attention: each sequence's attention over its keys, in every layer;
- KV writes: each layer's K and V written at the new positions;
- norms: the 61 RMS norms; rope: q and k rotated in every layer.
"the rest" is the step less all of those: the other ops (casts, splits, views, stacking,
padding, the embedding) and Python and torch's dispatch between all ops. torch.profiler counts
the top-level ops a step dispatches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import promptcache.model.llama as llama  # noqa: E402
from promptcache.model.head import HEADS  # noqa: E402
from promptcache.model.rope import apply_rope  # noqa: E402
from promptcache.model.source import open_model  # noqa: E402


def best_ms(fn, steps: int, repeats: int) -> float:
    """Thread CPU ms per call of fn, best of `repeats` rounds of `steps` calls (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(steps):
            fn()
        best = min(best, (time.thread_time() - start) / steps * 1000)
    return best


def parts(model: llama.LlamaModel, kv: torch.Tensor, batch: int, position: int) -> dict:
    """The step's kinds of work, each as a function that replays all of it once."""
    c, R = model.config, model._decode_rows(batch)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(R, c.hidden_size, generator=gen).to(model.dtype)
    attn_in = torch.randn(R, c.num_heads * c.head_dim, generator=gen).to(model.dtype)
    mlp_in = torch.randn(R, c.intermediate_size, generator=gen).to(model.dtype)
    q = torch.randn(c.num_heads, R, c.head_dim, generator=gen).to(model.kv_dtype)
    k = torch.randn(c.num_kv_heads, R, c.head_dim, generator=gen).to(model.kv_dtype)
    cos, sin = llama.pad_rows(model.cos[[position] * batch], R), llama.pad_rows(model.sin[[position] * batch], R)
    pos, slots = torch.tensor([position] * batch), torch.arange(batch)
    h = torch.randn(R, c.hidden_size, generator=gen)

    def products():
        for layer in model.layers:
            for w, inp in ((layer.qkv, x), (layer.o, attn_in), (layer.gate_up, x), (layer.down, mlp_in)):
                model._matmul(inp, w, None)

    def attention():
        for i in range(len(model.layers)):
            for b in range(batch):
                F.scaled_dot_product_attention(q[None, :, b:b + 1], kv[i, 0, b:b + 1, :, :position + 1],
                                               kv[i, 1, b:b + 1, :, :position + 1], enable_gqa=True)

    def kv_writes():
        for i in range(len(model.layers)):
            kv[i, 0][slots, :, pos] = k[:, :batch].transpose(0, 1)
            kv[i, 1][slots, :, pos] = k[:, :batch].transpose(0, 1)

    def norms():
        for layer in model.layers:
            model._norm(x, layer.attn_norm)
            model._norm(x, layer.mlp_norm)
        F.rms_norm(h, (h.shape[-1],), model.norm_f32, c.rms_norm_eps)

    def rope():
        for _ in model.layers:
            apply_rope(q, cos, sin)
            apply_rope(k, cos, sin)

    return {"layer products": products, "head": lambda: model.head(h), "attention": attention,
            "KV writes": kv_writes, "norms": norms, "rope": rope}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--head", choices=HEADS, help="the output head (default: the model's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    source = open_model(None)
    model = llama.LlamaModel(source.config, source.load_state_dict(), dtype=torch.bfloat16, head=args.head)
    batches = [int(b) for b in args.batches.split(",")]
    kv = model.new_kv(max(batches), args.context + 2)
    gen = torch.Generator().manual_seed(0)
    context = torch.randint(0, source.config.vocab_size, (args.context,), generator=gen)
    for b in range(max(batches)):
        model.prefill(context, 0, b, kv, want_logits=False)
    results = {"head": type(model.head).__name__}
    for batch in batches:
        tokens = torch.randint(0, source.config.vocab_size, (batch,), generator=gen)

        def step():
            model.decode(tokens, [args.context] * batch, list(range(batch)), kv)

        row = {"step": best_ms(step, args.steps, args.repeats)}
        for kind, fn in parts(model, kv, batch, args.context).items():
            row[kind] = best_ms(fn, args.steps, args.repeats)
        row["the rest"] = row["step"] - sum(v for k, v in row.items() if k != "step")
        with profile() as prof:
            step()
        row["top-level ops"] = sum(e.cpu_parent is None for e in prof.events())
        results[f"batch {batch}"] = row
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"head: {results['head']}; ms per decode step (thread CPU time, 1 thread, {args.context} tokens of context)")
    for batch in batches:
        row = results[f"batch {batch}"]
        print(f"batch {batch} ({model._decode_rows(batch)} rows): step {row['step']:.2f} ms, "
              f"{row['top-level ops']} top-level ops")
        for kind, ms in row.items():
            if kind not in ("step", "top-level ops"):
                print(f"  {kind:16} {ms:7.2f} ms  {ms / row['step']:6.1%}")


if __name__ == "__main__":
    main()
