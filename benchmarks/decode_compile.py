"""torch.compile (inductor) of the CPU decode step, against the eager step, on SmolLM2 in bfloat16.

    python benchmarks/decode_compile.py [--batches 1,4] [--no-freeze] [--cache-dir DIR] [--rounds 3]

What is compiled: the 30 layers of one decode step at one padded row count (dynamic=False, as
the eager step pads once), the weights held by an nn.Module so that inductor's weight freezing
(on unless --no-freeze) can prepack them for oneDNN as llama.prepack does. Per-sequence
attention and the KV writes stay eager, as one opaque op per layer (a torch.library op: its
positions are host values, which a graph would otherwise specialise on). The output head runs
eagerly after the graph (inductor would give it to MKL's float32 GEMM, 2-3x slower at 2-8 rows).

Printed per batch size: the compile time of its first call (inductor's caches live in --cache-dir,
default ~/.cache/promptcache/inductor; a second run of this script measures a restart with them
warm, and the inductor cache counters say whether they hit), the step's thread CPU time compiled
and eager (1 thread, best of --rounds, the two in turns), and whether the compiled step is
row-invariant: a sequence's logits alone (2 rows) equal its logits in a batch of 4 and of 8.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import promptcache.model.llama as llama  # noqa: E402
from promptcache.model.rope import apply_rope  # noqa: E402
from promptcache.model.source import open_model  # noqa: E402

LIB = torch.library.Library("decode_bench", "DEF")
LIB.define("attend(Tensor q, Tensor k, Tensor v, Tensor(a!) kv, int layer, Tensor pos, Tensor slots) -> Tensor")


def attend(q, k, v, kv, layer, pos, slots):
    """Write k, v at each sequence's position, then its attention over its own keys: (R, Hq D)."""
    B, R = pos.shape[0], q.shape[1]
    kv[layer, 0][slots, :, pos] = k[:, :B].transpose(0, 1)
    kv[layer, 1][slots, :, pos] = v[:, :B].transpose(0, 1)
    outs = [F.scaled_dot_product_attention(q[None, :, b:b + 1], kv[layer, 0, s:s + 1, :, :p + 1],
                                           kv[layer, 1, s:s + 1, :, :p + 1], enable_gqa=True)[0, :, 0]
            for b, (p, s) in enumerate(zip(pos.tolist(), slots.tolist()))]
    outs += [q.new_zeros(q.shape[0], q.shape[2])] * (R - B)
    return torch.stack(outs).reshape(R, -1)


LIB.impl("attend", attend, "CPU")


@torch.library.register_fake("decode_bench::attend")
def _attend_shape(q, k, v, kv, layer, pos, slots):
    return q.new_empty(q.shape[1], q.shape[0] * q.shape[2])


class Layers(nn.Module):
    """The decode step's layers, x (R, E) -> final hidden states (R, E), over plain weights."""

    def __init__(self, model: llama.LlamaModel, state: dict, dtype: torch.dtype):
        super().__init__()
        self.config, self.split = model.config, model._split

        def param(t):
            return nn.Parameter(t.to(dtype).contiguous(), requires_grad=False)

        self.layers = nn.ModuleList()
        for i in range(model.config.num_layers):
            p, a, layer = f"model.layers.{i}.", f"model.layers.{i}.self_attn.", nn.Module()
            layer.attn_norm = param(state[p + "input_layernorm.weight"])
            layer.qkv = param(torch.cat([state[a + f"{n}_proj.weight"] for n in "qkv"]))
            layer.o = param(state[a + "o_proj.weight"])
            layer.mlp_norm = param(state[p + "post_attention_layernorm.weight"])
            layer.gate_up = param(torch.cat([state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]]))
            layer.down = param(state[p + "mlp.down_proj.weight"])
            self.layers.append(layer)

    def forward(self, x, cos, sin, kv, pos, slots):
        c, R = self.config, x.shape[0]
        for i, layer in enumerate(self.layers):
            qkv = F.linear(F.rms_norm(x, (x.shape[-1],), layer.attn_norm, c.rms_norm_eps), layer.qkv)
            q, k, v = qkv.float().split(self.split, dim=-1)
            q = apply_rope(q.view(R, c.num_heads, c.head_dim).transpose(0, 1), cos, sin)
            k = apply_rope(k.view(R, c.num_kv_heads, c.head_dim).transpose(0, 1), cos, sin)
            v = v.view(R, c.num_kv_heads, c.head_dim).transpose(0, 1)
            attn = torch.ops.decode_bench.attend(q, k, v, kv, i, pos, slots)
            x = x + F.linear(attn.to(x.dtype), layer.o)
            gate, up = F.linear(F.rms_norm(x, (x.shape[-1],), layer.mlp_norm, c.rms_norm_eps), layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-freeze", action="store_true")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/promptcache/inductor"))
    args = p.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    inductor_config.freezing = not args.no_freeze
    torch.set_num_threads(1)
    source = open_model(None)
    state = source.load_state_dict()
    model = llama.LlamaModel(source.config, state, dtype=torch.bfloat16)
    compiled = torch.compile(Layers(model, state, torch.bfloat16).eval(), dynamic=False, fullgraph=True)
    kv_eager, kv_compiled = model.new_kv(8, args.context + 2), model.new_kv(8, args.context + 2)
    context = torch.randint(0, source.config.vocab_size, (args.context,), generator=torch.Generator().manual_seed(0))
    for b in range(8):
        model.prefill(context, 0, b, kv_eager, want_logits=False)
    kv_compiled.copy_(kv_eager)

    @torch.no_grad()
    def step(batch: int) -> torch.Tensor:
        R = model._decode_rows(batch)
        tokens, pos, slots = torch.full((batch,), 1234), torch.full((batch,), args.context), torch.arange(batch)
        x = llama.pad_rows(F.embedding(tokens, model.embed), R)
        cos, sin = llama.pad_rows(model.cos[pos], R), llama.pad_rows(model.sin[pos], R)
        return model.logits(compiled(x, cos, sin, kv_compiled, pos, slots)[:batch])

    def eager(batch: int) -> torch.Tensor:
        return model.decode(torch.full((batch,), 1234), [args.context] * batch, list(range(batch)), kv_eager)

    print(f"inductor cache: {args.cache_dir}; weight freezing: {not args.no_freeze}", flush=True)
    for batch in [int(b) for b in args.batches.split(",")]:
        start = time.perf_counter()
        out = step(batch)
        print(f"batch {batch}: compiled in {time.perf_counter() - start:.1f} s (wall)", flush=True)
        ref = eager(batch)
        best = {"compiled": float("inf"), "eager": float("inf")}
        for _ in range(args.rounds):
            for name, fn in (("compiled", step), ("eager", eager)):
                t = time.thread_time()
                for _ in range(args.steps):
                    fn(batch)
                best[name] = min(best[name], (time.thread_time() - t) / args.steps * 1000)
        print(f"batch {batch}: compiled {best['compiled']:.2f} ms, eager {best['eager']:.2f} ms a step "
              f"({best['eager'] / best['compiled']:.2f}x); max |logit difference| {(out - ref).abs().max().item():.3f}, "
              f"same argmax {torch.equal(out.argmax(-1), ref.argmax(-1))}", flush=True)
    alone, four, eight = step(1), step(4), step(8)
    print(f"row-invariant: alone == in 4 {torch.equal(alone[0], four[0])}, 4 == first 4 of 8 {torch.equal(four, eight[:4])}")
    print("inductor cache:", {k: v for k, v in counters["inductor"].items() if "cache" in k},
          {k: v for k, v in counters["aot_autograd"].items() if "cache" in k})


if __name__ == "__main__":
    main()
