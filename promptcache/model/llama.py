"""The Llama-family decoder (Llama, Mistral, Qwen2): RMSNorm, rotary embeddings, grouped-query
attention, SwiGLU MLP, tied or untied output head.

The model owns weights only. The KV cache is owned by the engine and passed in as one tensor
`kv` of shape (layers, 2, slots, kv_heads, max_len, head_dim): K and V of every slot, addressable
by token position. That is what lets the prefix cache hand the engine the KV of a prefix and ask
for the rest: `prefill` computes positions [start, start + T) of one slot and attends to
everything already in that slot before `start`, wherever it came from.

Two entry points, as gpt-fast has them, so the hot decode loop stays small:
- `prefill(tokens, start, slot, kv)`: one chunk of one sequence; logits of its last position only.
- `decode(tokens, positions, slots, kv)`: one new token for each of a batch of sequences.
On a GPU both can run as CUDA graphs (cuda_graphs.py), through `decode_batched` and
`prefill_static`: the same steps written as tensor operations only.

Checkpoint quirks (GGUF's Q/K row permutation, tied heads) are fixed at load time, and the Q/K/V
and gate/up projections are fused into one matmul each, so a layer is four matmuls.

The KV cache may be wider than the weights: on CPU it is float32 even for bfloat16 weights,
because single-query attention over a long bf16 cache measured 2.8x slower than float32 here.
Attention (and rope) run in the cache's dtype; prefill attention measured no faster in bf16
(docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from promptcache.model.attention import grid_end, grid_prefill_attention
from promptcache.model.config import ModelConfig
from promptcache.model.cuda_graphs import DecodeGraphs, PrefillGraphs
from promptcache.model.head import output_head
from promptcache.model.onednn import packed_linear, prepack
from promptcache.model.quant import QuantizedHead, QuantizedWeight, parse, quantize_weight
from promptcache.model.rope import apply_rope, rope_tables
from promptcache.model.row_invariance import MIN_ROWS, invariant_rows, pad_rows, padded_rows
from promptcache.model.threads import default_decode_threads, torch_threads


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # (E,)
    qkv: torch.Tensor  # ((Hq + 2 Hkv) D, E)
    qkv_bias: torch.Tensor | None
    o: torch.Tensor  # (E, Hq D)
    mlp_norm: torch.Tensor  # (E,)
    gate_up: torch.Tensor  # (2 I, E)
    down: torch.Tensor  # (E, I)
    quantized: dict[str, QuantizedWeight] | None = None  # decode-time copies, by field name (quant.py)


# Products of at most this many rows use the quantized copy when not deterministic: one-row int8
# products read half the bytes of bf16 and ran 2.5x faster here; at 8 rows bf16's kernel is faster again.
INT8_MAX_ROWS = 2


# Row-invariance tables already probed in this process, by model shape (_probe_row_invariance).
_PROBED: dict[tuple, dict[str, frozenset[int]]] = {}


class LlamaModel:
    """Weights plus the two forward functions. Not an nn.Module: nothing here is trained, and
    plain attributes keep the per-layer loop free of module-call overhead."""

    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor], *, dtype: torch.dtype,
                 device: torch.device | str = "cpu", kv_dtype: torch.dtype | None = None,
                 quantize: str | None = None, use_cuda_graphs: bool = True, deterministic: bool = True,
                 head: str | None = None, decode_threads: int | None = None):
        self.config = config
        # Batch invariance on CPU (docs/design.md): products padded to row counts probed
        # invariant, and quantized decode at every batch size. Chunk invariance, which the prefix
        # cache's guarantee needs, is always on: prefill attention on a fixed grid (attention.py).
        self.deterministic = deterministic
        self.dtype = dtype
        self.device = torch.device(device)
        self.kv_dtype = kv_dtype or (torch.float32 if self.device.type == "cpu" else dtype)
        # One masked attention call per decode step instead of one per sequence, recorded as a
        # CUDA graph on GPUs (see decode).
        self.batched_decode_attention = self.device.type != "cpu"
        self.graphs = DecodeGraphs(self) if self.device.type == "cuda" and use_cuda_graphs else None
        self.prefill_graphs = PrefillGraphs(self) if self.graphs is not None else None
        # float32 matmul weights are stored transposed, (in, out): a one-row product (decode)
        # then streams the weight at twice the bandwidth of F.linear's layout on these CPUs,
        # while prefill-sized products lose ~2%. bfloat16 products measured the same either way.
        self.transposed = self.device.type == "cpu" and dtype == torch.float32

        def w(name: str) -> torch.Tensor:
            return state[name].to(device=self.device, dtype=dtype).contiguous()

        def mat(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device=self.device, dtype=dtype)
            return t.t().contiguous() if self.transposed else t.contiguous()

        self.embed = w("model.embed_tokens.weight")  # (V, E)
        # Logits are float32 in every path: the final norm and the head run in float32. `head`
        # picks how its weight is held (head.py: float16 weights by default for bfloat16 on CPU).
        weight = state["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]
        quantized_head = quantize is not None and self.device.type == "cpu" and parse(quantize)[1]
        self.head = QuantizedHead(weight, parse(quantize)[0]) if quantized_head else output_head(weight, self.device, dtype, head)
        self.norm_f32 = state["model.norm.weight"].to(device=self.device, dtype=torch.float32)
        self.layers: list[LayerWeights] = []
        for i in range(config.num_layers):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            bias = None
            if config.attention_bias:
                bias = torch.cat([state[a + f"{n}_proj.bias"] for n in "qkv"]).to(self.device, dtype)
            self.layers.append(LayerWeights(
                attn_norm=w(p + "input_layernorm.weight"),
                qkv=mat(torch.cat([state[a + f"{n}_proj.weight"] for n in "qkv"])),
                qkv_bias=bias,
                o=mat(state[a + "o_proj.weight"]),
                mlp_norm=w(p + "post_attention_layernorm.weight"),
                gate_up=mat(torch.cat([state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]])),
                down=mat(state[p + "mlp.down_proj.weight"]),
            ))
        self.cos, self.sin = rope_tables(config, config.context_length, self.kv_dtype, self.device)
        # A CPU decode step's thread count (threads.py): fewer than prefill's for a small model.
        self.decode_threads = None
        if self.device.type == "cpu":
            weight_bytes = sum(t.numel() * t.element_size() for layer in self.layers
                               for t in (layer.qkv, layer.o, layer.gate_up, layer.down)) + weight.numel() * weight.element_size()
            self.decode_threads = decode_threads or default_decode_threads(weight_bytes, torch.get_num_threads())
        self.quantize = quantize
        if quantize is not None:
            self._add_quantized_copies(quantize)
        # bfloat16 weights on the CPU are held prepacked for oneDNN (bitwise the same products).
        self.prepacked = (self.device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
                          and prepack(self.layers[0].o) is not None)
        if self.prepacked:
            for layer in self.layers:
                for name in ("qkv", "o", "gate_up", "down"):
                    setattr(layer, name, prepack(getattr(layer, name)))
        c = config
        self._split = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim)
        self.grid_attention = self.device.type == "cpu"
        self._invariant: dict[str, frozenset[int]] = {}
        if deterministic and self.device.type == "cpu":
            self._probe_row_invariance()

    def _probe_row_invariance(self) -> None:
        """Row counts at which each kind of product is batch-invariant (row_invariance.py).

        Probed once per process for each model shape: which kernel a product gets, and so its
        summation order, depends on the shapes, dtypes, layout and CPU, not on the weights'
        values, and a second engine of the same shape (tests, replicas, a reload) would spend
        seconds finding the same table."""
        c, layer = self.config, self.layers[0]
        weights = tuple((w.dtype, w.layout, tuple(w.shape), w.stride() if w.layout == torch.strided else None)
                        for w in (layer.qkv, layer.o, layer.gate_up, layer.down))  # how they are held
        shape = (c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size,
                 c.attention_bias, self.dtype, self.device, self.prepacked, self.transposed, self.quantize,
                 weights, type(self.head).__name__, getattr(self.head, "out_dtype", None),
                 torch.get_num_threads(), self.decode_threads)
        if (known := _PROBED.get(shape)) is not None:
            self._invariant.update(known)
            return
        self._probe_row_invariance_now()
        if self.decode_threads is not None and self.decode_threads != torch.get_num_threads():
            # Decode runs on its own thread count, where a kernel may block rows otherwise:
            # keep the row counts invariant at both.
            prefill = dict(self._invariant)
            with torch_threads(self.decode_threads):
                self._probe_row_invariance_now()
            self._invariant = {kind: rows & self._invariant[kind] for kind, rows in prefill.items()}
        _PROBED[shape] = dict(self._invariant)

    def _probe_row_invariance_now(self) -> None:
        def common(products) -> frozenset[int]:  # (product, in_features) pairs
            return frozenset.intersection(*(invariant_rows(p, n, self.dtype, self.device) for p, n in products))

        layer = self.layers[0]
        self._invariant["dense"] = common(
            (lambda x, w=w: self._matmul(x, w, None), w.shape[0] if self.transposed else w.shape[1])
            for w in (layer.qkv, layer.o, layer.gate_up, layer.down))
        if layer.quantized is not None:
            self._invariant["quantized"] = common((q, q.in_features) for q in layer.quantized.values())
        self._invariant["head"] = invariant_rows(self.head, self.config.hidden_size, torch.float32, self.device,
                                                 out_dtype=getattr(self.head, "out_dtype", None))

    def _add_quantized_copies(self, quantize: str) -> None:
        """Weight-only int8 or int4 copies for decode (an option: it changes logits, measured in
        docs/benchmarks.md). Prefill keeps the full-precision weights, so the KV that the prefix
        cache stores is the same with or without it. The head, when quantized, was built so in
        __init__ (quant.py)."""
        kind, _ = parse(quantize)
        if self.device.type != "cpu" or self.dtype != torch.bfloat16:
            raise ValueError(f"{kind} weight-only decode needs the CPU and --dtype bfloat16")
        for layer in self.layers:
            layer.quantized = {name: quantize_weight(getattr(layer, name), kind) for name in ("qkv", "o", "gate_up", "down")}

    # -- shared pieces -------------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.config.rms_norm_eps)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                quantized: QuantizedWeight | None = None) -> torch.Tensor:
        """x (rows, in) times a weight. `quantized` is given by decode only: that copy is then used
        at every batch size when deterministic (else up to INT8_MAX_ROWS rows, where it is
        faster). Products whose row count was probed not batch-invariant are padded."""
        if quantized is not None and (self.deterministic or x.shape[0] <= INT8_MAX_ROWS):
            out = self._padded("quantized", x, lambda rows: quantized(rows.contiguous()))
        else:
            out = self._padded("dense", x, lambda rows: self._matmul(rows, weight, None))
        return out if bias is None else out + bias

    def _padded(self, kind: str, x: torch.Tensor, product) -> torch.Tensor:
        """product(x), computed at the next row count probed batch-invariant for `kind` (zero
        rows appended, results cut back); unpadded when nothing was probed."""
        rows = x.shape[0]
        invariant = self._invariant.get(kind)
        if invariant is None:
            return product(x)
        return product(pad_rows(x, padded_rows(rows, invariant)))[:rows]

    def _matmul(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.prepacked:
            out = packed_linear(x.contiguous(), weight)
            return out if bias is None else out + bias
        if not self.transposed:
            return F.linear(x, weight, bias)
        return x @ weight if bias is None else torch.addmm(bias, x, weight)


    def _qkv(self, layer: LayerWeights, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, decode: bool = False):
        """Project x (T, E) to rotated q (Hq, T, D), k and v (Hkv, T, D) in the KV dtype."""
        c = self.config
        T = x.shape[0]
        qkv = self._linear(self._norm(x, layer.attn_norm), layer.qkv, layer.qkv_bias, self._quantized(layer, "qkv", decode))
        q, k, v = qkv.to(self.kv_dtype).split(self._split, dim=-1)
        q = q.view(T, c.num_heads, c.head_dim).transpose(0, 1)  # (Hq, T, D)
        k = k.view(T, c.num_kv_heads, c.head_dim).transpose(0, 1)  # (Hkv, T, D)
        v = v.view(T, c.num_kv_heads, c.head_dim).transpose(0, 1)  # (Hkv, T, D)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _mlp(self, layer: LayerWeights, x: torch.Tensor, decode: bool = False) -> torch.Tensor:
        gate_up = self._linear(self._norm(x, layer.mlp_norm), layer.gate_up, quantized=self._quantized(layer, "gate_up", decode))
        gate, up = gate_up.chunk(2, dim=-1)
        return self._linear(F.silu(gate) * up, layer.down, quantized=self._quantized(layer, "down", decode))

    @staticmethod
    def _quantized(layer: LayerWeights, name: str, decode: bool) -> QuantizedWeight | None:
        """The quantized copy of a weight, for decode only: prefill keeps full precision, so the KV
        that the prefix cache stores is the same with or without quantization."""
        return layer.quantized[name] if layer.quantized and decode else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 logits (rows, V) of final hidden states (rows, E), each row's bits the same
        in any number of rows (the head is padded to row-invariant counts)."""
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 logits (rows, V) of hidden states x (rows, E), computed in float32."""
        h = F.rms_norm(x.float(), (x.shape[-1],), self.norm_f32, self.config.rms_norm_eps)
        return self._padded("head", h, self.head)

    def new_kv(self, slots: int, max_len: int) -> torch.Tensor:
        """An empty KV cache (layers, 2, slots, Hkv, max_len, D).

        On CPU, torch.empty leaves untouched pages unmapped, so memory grows with the positions
        actually written; nothing there reads a position before writing it. On a GPU, graphed
        decode reads keys up to a bucket's end under a mask, and a masked probability of 0
        times a NaN left in fresh memory is still NaN: zero the cache once."""
        c = self.config
        if self.grid_attention:  # grid prefill reads keys up to the next grid line
            max_len = grid_end(max_len)
        shape = (c.num_layers, 2, slots, c.num_kv_heads, max_len, c.head_dim)
        make = torch.empty if self.device.type == "cpu" else torch.zeros
        return make(shape, dtype=self.kv_dtype, device=self.device)

    # -- forward passes ------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor, start: int, slot: int, kv: torch.Tensor,
                want_logits: bool = True, hidden: bool = False) -> torch.Tensor | None:
        """Compute positions [start, start + T) of the sequence in `slot`, writing their K/V
        into `kv`; positions before `start` must already hold that sequence's KV.

        A chunk that starts at position 0 uses SDPA's causal mode (which skips masked blocks);
        a later chunk uses an explicit mask over keys [0, end). Measured on CPU, a row's result
        is the same either way and whatever chunk it is computed in (docs/design.md), which is
        what makes a prefix-cache hit bitwise equal to a cold run. Attention runs in the KV
        cache's dtype. Returns the float32 logits (V,) of the last position, or None when
        want_logits is False; with `hidden`, the final hidden states (T, E) of every position
        instead (prompt logprobs take `logits` of each row from them).

        On the CPU a chunk of fewer than MIN_ROWS rows (a short prompt, or the tail after a
        cache hit) runs its products at MIN_ROWS rows, zero rows appended at the embedding: a
        product of a few rows (float32: 1-3, 5-7, 9-11 here; bfloat16: 1) sums in another order
        than the larger cold chunk that computed the same rows did, with or without
        --deterministic. The grid (attention.py) computes a short tail's attention as the cold
        path does already, so a hit can reuse every full block (cache/reusable.py).
        """
        T = tokens.shape[0]
        end = start + T
        if want_logits and self.prefill_graphs is not None and self.prefill_graphs.fits(start, T, kv):
            return self.prefill_graphs.run(tokens, start, slot, kv)  # a short suffix on a GPU
        R = max(T, MIN_ROWS) if self.grid_attention else T  # rows the products run at
        x = pad_rows(F.embedding(tokens, self.embed), R)  # (R, E)
        cos, sin = pad_rows(self.cos[start:end], R), pad_rows(self.sin[start:end], R)  # (R, D)
        mask = None
        if self.grid_attention:  # keys past `end` up to the grid are read (masked): make them finite
            kv[:, :, slot, :, end:grid_end(end)] = 0
        elif start > 0:
            mask = torch.ones(T, end, dtype=torch.bool, device=self.device).tril(diagonal=start)
        for i, layer in enumerate(self.layers):
            q, k, v = (t[:, :T] for t in self._qkv(layer, x, cos, sin))  # padding rows keep no KV
            kv[i, 0, slot, :, start:end] = k
            kv[i, 1, slot, :, start:end] = v
            if self.grid_attention:
                attn = grid_prefill_attention(q, kv[i, 0, slot], kv[i, 1, slot], start)  # (Hq, T, D)
            else:
                attn = F.scaled_dot_product_attention(
                    q[None], kv[i, 0, slot, None, :, :end], kv[i, 1, slot, None, :, :end],
                    attn_mask=mask, is_causal=mask is None, enable_gqa=True,
                )[0]  # (Hq, T, D)
            x = x + self._linear(pad_rows(attn.transpose(0, 1).reshape(T, -1).to(self.dtype), R), layer.o)
            x = x + self._mlp(layer, x)
        if hidden:
            return x[:T]
        if not want_logits:
            return None
        return self._logits(x[T - 1:T])[0]

    def prefill_static(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, last: torch.Tensor,
                       slot: int, length: int, kv: torch.Tensor) -> torch.Tensor:
        """A prefill chunk as tensor operations only, for CUDA graph recording: rows at
        `positions` of `slot`, attending to keys [0, length) under `mask` (rows, length);
        returns the float32 logits (1, V) of row `last`."""
        x = F.embedding(tokens, self.embed)  # (R, E)
        cos, sin = self.cos[positions], self.sin[positions]  # (R, D)
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, cos, sin)
            kv[i, 0, slot][:, positions] = k  # (Hkv, R, D)
            kv[i, 1, slot][:, positions] = v
            attn = F.scaled_dot_product_attention(
                q[None], kv[i, 0, slot, None, :, :length], kv[i, 1, slot, None, :, :length],
                attn_mask=mask, enable_gqa=True,
            )[0]  # (Hq, R, D)
            x = x + self._linear(attn.transpose(0, 1).reshape(tokens.shape[0], -1).to(self.dtype), layer.o)
            x = x + self._mlp(layer, x)
        return self._logits(x[last])

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: list[int], slots: list[int], kv: torch.Tensor) -> torch.Tensor:
        """One step for a batch: token b sits at positions[b] of the sequence in slots[b].

        Projections and the MLP run batched. On CPU, attention runs per sequence over exactly
        its own keys, so a sequence's attention does not depend on what else is in the batch
        (a masked batched call measured no faster there). On a GPU, where each call costs a
        kernel launch, the batch attends in one masked call over the slots it spans, and the
        whole step replays as a CUDA graph (cuda_graphs.py).
        Returns float32 logits (B, V).
        """
        if self.batched_decode_attention:
            if self.graphs is not None:
                return self.graphs.run(tokens, positions, slots, kv)
            span, length = max(slots) + 1, max(positions) + 1
            return self.decode_batched(tokens, torch.tensor(positions, device=self.device),
                                       torch.tensor(slots, device=self.device),
                                       self.decode_mask(positions, slots, span, length).to(self.device), span, length, kv)
        with torch_threads(self.decode_threads):
            return self._decode_per_sequence(tokens, positions, slots, kv)

    def _decode_per_sequence(self, tokens: torch.Tensor, positions: list[int], slots: list[int],
                             kv: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        # The whole step runs at a batch-invariant row count (zero rows appended once), so no
        # product pads and cuts its own rows; row-wise ops give a row the same bits either way.
        R = self._decode_rows(B)
        pos = torch.tensor(positions, device=self.device)
        slot_idx = torch.tensor(slots, device=self.device)
        x = pad_rows(F.embedding(tokens, self.embed), R)  # (R, E)
        cos, sin = pad_rows(self.cos[pos], R), pad_rows(self.sin[pos], R)  # (R, D): row b is sequence b
        padding = [torch.zeros(self.config.num_heads, self.config.head_dim, dtype=self.kv_dtype)] * (R - B)
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, cos, sin, decode=True)  # q (Hq, R, D) rows are sequences
            kv[i, 0][slot_idx, :, pos] = k[:, :B].transpose(0, 1)  # (B, Hkv, D)
            kv[i, 1][slot_idx, :, pos] = v[:, :B].transpose(0, 1)
            outs = []
            for b in range(B):
                n, s = positions[b] + 1, slots[b]
                outs.append(F.scaled_dot_product_attention(
                    q[None, :, b:b + 1], kv[i, 0, s:s + 1, :, :n], kv[i, 1, s:s + 1, :, :n], enable_gqa=True
                )[0, :, 0])  # (Hq, D)
            attn = torch.stack(outs + padding).reshape(R, -1)  # (R, Hq D)
            x = x + self._linear(attn.to(self.dtype), layer.o, quantized=self._quantized(layer, "o", True))
            x = x + self._mlp(layer, x, decode=True)
        return self._logits(x[:B])

    def _decode_rows(self, batch: int) -> int:
        """The row count a CPU decode step of `batch` sequences runs at: the next one probed
        batch-invariant for the products decode uses (quantized copies or full-precision weights)."""
        quantized = self.layers[0].quantized is not None and (self.deterministic or batch <= INT8_MAX_ROWS)
        invariant = self._invariant.get("quantized" if quantized else "dense")
        return batch if invariant is None else padded_rows(batch, invariant)

    @staticmethod
    def decode_mask(positions: list[int], slots: list[int], span: int, length: int) -> torch.Tensor:
        """(span, 1, 1, length) bool on the CPU: row s of the padded batch is slot s and sees its
        keys [0, position]; rows of slots outside the batch see position 0 only (no empty row)."""
        lengths = torch.ones(span, dtype=torch.long)
        lengths[slots] = torch.tensor(positions) + 1
        return (torch.arange(length)[None, :] < lengths[:, None])[:, None, None, :]

    def decode_batched(self, tokens: torch.Tensor, pos: torch.Tensor, slot_idx: torch.Tensor, mask: torch.Tensor,
                       span: int, length: int, kv: torch.Tensor) -> torch.Tensor:
        """The decode step as tensor operations only (no host values), so a CUDA graph can
        record it: attention is one masked call over slots [0, span) and keys [0, length)."""
        c = self.config
        B = tokens.shape[0]
        x = F.embedding(tokens, self.embed)  # (B, E)
        cos, sin = self.cos[pos], self.sin[pos]  # (B, D)
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, cos, sin, decode=True)  # q (Hq, B, D)
            kv[i, 0][slot_idx, :, pos] = k.transpose(0, 1)  # (B, Hkv, D)
            kv[i, 1][slot_idx, :, pos] = v.transpose(0, 1)
            padded = q.new_zeros((span, c.num_heads, 1, c.head_dim))
            padded[slot_idx] = q.transpose(0, 1)[:, :, None]
            out = F.scaled_dot_product_attention(
                padded, kv[i, 0, :span, :, :length], kv[i, 1, :span, :, :length], attn_mask=mask, enable_gqa=True
            )  # (span, Hq, 1, D)
            attn = out[slot_idx, :, 0].reshape(B, -1)
            x = x + self._linear(attn.to(self.dtype), layer.o, quantized=self._quantized(layer, "o", True))
            x = x + self._mlp(layer, x, decode=True)
        return self._logits(x)
