"""Weights held in oneDNN's blocked layout, for the CPU's bfloat16 and float32 products.

F.linear reaches oneDNN's kernel for a bfloat16 (or float32) product on these CPUs, but reorders
the plain (out, in) weight into the kernel's blocked layout on every call. Reordering once at
load and calling the kernel directly gives bitwise the same products (checked from 1 to 512
rows) at 1.2-1.4x the speed of a decode step (docs/benchmarks.md, issue 9).
"""

from __future__ import annotations

import torch

PREPACK_ROWS = 2  # the row count oneDNN is told to expect: decode's, padded (row_invariance.py)


def prepack(weight: torch.Tensor) -> torch.Tensor | None:
    """weight (out, in) reordered once into oneDNN's blocked layout, for `packed_linear`.
    None where oneDNN cannot prepack this dtype on this CPU (bfloat16 needs AVX-512 or
    AVX-NE-CONVERT): the caller keeps the plain weight, whose products are the same."""
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, PREPACK_ROWS)
    except RuntimeError:
        return None


def packed_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (rows, in) times a prepacked weight -> (rows, out), in x's dtype."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
