"""Weight-only quantized copies for the CPU decode step (`--quantize`).

A decode step reads every weight once for one to a few rows, so its speed is the bytes it reads:
bfloat16 layers (2 bytes a weight) and a float32 output head (4 bytes, a third of SmolLM2's
step). torch's CPU kernels multiply bfloat16 activations by int8 weights with one scale per
output row (`_weight_int8pack_mm`) or by int4 weights with a scale and zero point per group of
input columns (`_weight_int4pack_mm_for_cpu`). Which of them pays, and what each costs in
quality, is measured in docs/benchmarks.md (benchmarks/decode_levers.py, benchmarks/kl.py).

Options:
- "int8", "int4": the layers' four products per layer, in decode only. Prefill keeps the
  full-precision weights, so the KV that the prefix cache stores is the same with or without.
- "int8+head", "int4+head": the output head too, in prefill and decode alike (it writes no KV).
  The quantized kernels take and return bfloat16, so these heads' logits are rounded to
  bfloat16 before they become float32 (the unquantized head computes them in float32).
Each quantized product runs only at row counts probed batch-invariant (row_invariance.py),
like every other product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

QUANTIZATIONS = ("int8", "int4", "int8+head", "int4+head")
# Input columns per int4 scale and zero point. 32 keeps the error of a group's 16 levels lowest
# of the sizes the kernel takes; 64 measured no faster at SmolLM2's shapes (docs/benchmarks.md).
INT4_GROUP = 32


def parse(quantize: str) -> tuple[str, bool]:
    """("int8" or "int4", whether the head is quantized too) of a --quantize value."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r}: one of {', '.join(QUANTIZATIONS)}")
    kind, _, head = quantize.partition("+")
    return kind, head == "head"


@dataclass
class Int8Weight:
    """Weight-only int8, one symmetric scale per output row (what torch's int8 x bf16 kernel takes)."""

    values: torch.Tensor  # (out, in) int8
    scales: torch.Tensor  # (out,) bf16

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> "Int8Weight":
        w = weight.float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        values = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        return cls(values, scales.to(torch.bfloat16))

    @property
    def in_features(self) -> int:
        return self.values.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), self.values, self.scales)


@dataclass
class Int4Weight:
    """Weight-only int4, asymmetric per group of INT4_GROUP input columns: a weight is
    (q - 8) * scale + zero for q in 0..15, with scale and zero in bfloat16 (the kernel's type).
    q is rounded against the bfloat16 scale and zero the kernel will use, not the exact ones."""

    packed: torch.Tensor  # (out, in / 2) uint8, the kernel's own layout
    scales_zeros: torch.Tensor  # (in / group, out, 2) bf16
    group: int
    in_features: int

    @classmethod
    def quantize(cls, weight: torch.Tensor, group: int = INT4_GROUP) -> "Int4Weight":
        out, cols = weight.shape
        if cols % group:
            raise ValueError(f"int4 needs input widths divisible by {group}; this model has {cols}")
        w = weight.float().reshape(out, cols // group, group)
        low, high = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
        scales = ((high - low) / 15).clamp(min=1e-6).to(torch.bfloat16).float()
        zeros = (low + 8 * scales).to(torch.bfloat16).float()
        q = (torch.round((w - zeros) / scales) + 8).clamp(0, 15).to(torch.int32).reshape(out, cols)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 2)
        scales_zeros = torch.cat([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        return cls(packed, scales_zeros, group, cols)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x.contiguous(), self.packed, self.group, self.scales_zeros)


QuantizedWeight = Int8Weight | Int4Weight


def quantize_weight(weight: torch.Tensor, kind: str) -> QuantizedWeight:
    return Int8Weight.quantize(weight) if kind == "int8" else Int4Weight.quantize(weight)


class QuantizedHead:
    """The output head as int8 or int4 weights: float32 hidden states in, float32 logits out,
    multiplied in bfloat16 (the kernels' activation and output type). A fourth (int8) or an
    eighth (int4) of the float32 head's bytes."""

    out_dtype = torch.bfloat16  # the precision the logits carry (the row-invariance probe's)

    def __init__(self, weight: torch.Tensor, kind: str):
        self.weight = quantize_weight(weight.float(), kind)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (rows, E) float32 -> logits (rows, V) float32."""
        return self.weight(x.to(torch.bfloat16)).float()
