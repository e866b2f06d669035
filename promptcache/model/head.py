"""The output head: final hidden states (rows, E) float32 in, logits (rows, V) float32 out.

Logits are float32 in every configuration (docs/benchmarks.md, issue 19): a bfloat16 logit's
step near 25 is 0.125, so near-ties became exact ties that each CPU kernel family broke its own
way. What differs is how the weight is held, which is a decode step's largest single read
(SmolLM2: 49,152 x 576, a third of a bfloat16 step's bytes when held in float32):
- "float32" (`OutputHead`): float32 weights, oneDNN's float32 kernel on the CPU; on a GPU,
  bfloat16 weights with float32 accumulation and output.
- "float16" (`HalfWeightHead`, the CPU default for bfloat16 models): float16 weights widened to
  float32 in registers by FBGEMM's fp16 GEMM, float32 activations, products and sums. Half the
  bytes; 1.9x faster than the float32 head at 1 to 8 rows, and a weight's rounding error is at
  most 2**-11 of it, against 2**-8 in bfloat16 (quality gate in docs/benchmarks.md, issue 9).
Both heads give a row the same bits at every row count measured (1-16 and 300).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from promptcache.model.onednn import packed_linear, prepack

HEADS = ("float32", "float16")
FLOAT16_MAX = 65504.0


class OutputHead:
    """float32 weights on the CPU, multiplied by oneDNN's float32 kernel, which measured as fast
    as a bfloat16 head at 4-8 rows where MKL's float32 GEMM was 2-3x slower (benchmarks/head.py).
    On a GPU a bfloat16 weight is multiplied with float32 accumulation and output, which needs
    no second copy of a large vocabulary's head."""

    kind = "float32"  # one of HEADS: what the numerics class names (numerics.py)

    def __init__(self, weight: torch.Tensor, device: torch.device, dtype: torch.dtype):
        self.weight = weight.to(device=device, dtype=torch.float32).contiguous()  # (V, E)
        self._mixed = False
        self._onednn = device.type == "cpu" and torch.backends.mkldnn.is_available()
        if self._onednn:
            packed = prepack(self.weight)
            self.weight = self.weight if packed is None else packed
        if device.type == "cuda" and dtype != torch.float32:
            low = weight.to(device=device, dtype=dtype).contiguous()
            try:
                torch.mm(low[:1], low[:2].t(), out_dtype=torch.float32)
            except (RuntimeError, TypeError):
                return  # keep the float32 copy
            self.weight, self._mixed, self.low_dtype = low, True, dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (rows, E) float32 -> logits (rows, V) float32."""
        if self._mixed:
            return torch.mm(x.to(self.low_dtype), self.weight.t(), out_dtype=torch.float32)
        if self._onednn:
            return packed_linear(x, self.weight)
        return F.linear(x, self.weight)


class HalfWeightHead:
    """float16 weights, float32 arithmetic: torch.ops.quantized.linear_dynamic_fp16 (FBGEMM)
    widens each weight to float32 and neither rounds the activations nor the sums, so its logits
    differ from the float32 head's only by the weights' float16 rounding and summation order."""

    kind = "float16"

    def __init__(self, weight: torch.Tensor):
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.float().contiguous(), None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (rows, E) float32 -> logits (rows, V) float32."""
        return torch.ops.quantized.linear_dynamic_fp16(x.contiguous(), self.packed)


@functools.cache
def float16_head_available() -> bool:
    """Whether this torch build has FBGEMM's fp16 GEMM for this CPU."""
    try:
        HalfWeightHead(torch.ones(8, 8))(torch.ones(1, 8))
    except (RuntimeError, NotImplementedError):
        return False
    return True


def default_head(device: torch.device, dtype: torch.dtype) -> str:
    """The head a model gets unless told otherwise: float16 weights for a bfloat16 model on the
    CPU where FBGEMM has the kernel (float32 models keep the float32 head: they are the
    reference); float32 otherwise."""
    cpu_bf16 = torch.device(device).type == "cpu" and dtype == torch.bfloat16
    return "float16" if cpu_bf16 and float16_head_available() else "float32"


def output_head(weight: torch.Tensor, device: torch.device, dtype: torch.dtype, kind: str | None = None):
    """The head of `kind` (one of HEADS; None: default_head). A float16 head falls back to the
    float32 one where its kernel is missing or a weight exceeds float16's range."""
    kind = kind or default_head(device, dtype)
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}: one of {', '.join(HEADS)}")
    fits = kind == "float16" and float16_head_available() and weight.abs().max().item() <= FLOAT16_MAX
    return HalfWeightHead(weight) if fits and torch.device(device).type == "cpu" else OutputHead(weight, device, dtype)
