"""Prefill attention on a fixed grid, so that a row's result never depends on how its prompt
was split into chunks.

Why not SDPA: torch's CPU flash-attention kernel cuts the queries of one call into blocks whose
size depends on the call's query count (32, 64 or 256 rows), and its float32 GEMMs give a row a
different result when its block holds another number of rows (benchmarks/determinism.py shows
a first-layer difference of ~5e-8 between a 880-row and a 1,078-row causal call over the same
first 880 tokens). A cache hit computes the suffix in another call than a cold prefill does, so
in bfloat16 those differences grew into different greedy tokens in 8 of 24 chats.

Here every query row at absolute position p is computed in grid block g = p // GRID, as one of
exactly GRID rows (missing rows are zero padding). The block attends in two fused calls of
shapes fixed by g: keys [0, g * GRID) with no mask, and its own GRID keys under the causal
mask (a square, so torch's causal mode applies). The two partial results are merged by their
log-sum-exps, elementwise. Every product a row takes part in therefore has the same shape
whichever chunk the row came in, over the same keys: the row is bitwise the same.

Cost: padding rows, and two calls per block instead of one per chunk; docs/benchmarks.md.
"""

from __future__ import annotations

import torch

GRID = 64  # query rows per block: as fast as 128 or 256 for a cold 2,048-token prefill, and the
# cheapest padding for a short suffix after a hit (docs/benchmarks.md)

# The fused CPU kernel behind SDPA, called directly because it also returns the log-sum-exp.
_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def grid_end(end: int) -> int:
    """The key length the last block of a chunk ending at `end` reads: end rounded up to GRID."""
    return -(-end // GRID) * GRID


def grid_prefill_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> torch.Tensor:
    """Causal attention of query rows at positions [start, start + T) over a slot's keys.

    q: (Hq, T, D) float; keys, values: (Hkv, >= grid_end(start + T), D), holding every position
    up to start + T (positions past it are only seen by padding rows). Returns (Hq, T, D).
    """
    Hq, T, D = q.shape
    Hkv = keys.shape[0]
    group = Hq // Hkv
    end = start + T
    out = q.new_empty((Hq, T, D))
    for g in range(start // GRID, (end - 1) // GRID + 1):
        lo, hi = g * GRID, (g + 1) * GRID  # the block's absolute query positions
        rows_lo, rows_hi = max(lo, start), min(hi, end)  # the rows of this call inside it
        block = q.new_zeros((Hq, GRID, D))
        block[:, rows_lo - lo:rows_hi - lo] = q[:, rows_lo - start:rows_hi - start]
        own_k = keys[:, lo:hi].repeat_interleave(group, dim=0)  # (Hq, GRID, D)
        own_v = values[:, lo:hi].repeat_interleave(group, dim=0)
        result, lse = _flash(block[None], own_k[None], own_v[None], 0.0, True)  # (1, Hq, GRID, D), (1, Hq, GRID)
        result, lse = result[0], lse[0]
        if lo > 0:  # every earlier key is visible to every row: GQA heads ride as extra rows
            past, past_lse = _flash(block.view(1, Hkv, group * GRID, D), keys[None, :, :lo], values[None, :, :lo],
                                    0.0, False)
            past, past_lse = past.reshape(Hq, GRID, D), past_lse.reshape(Hq, GRID)
            top = torch.maximum(lse, past_lse)
            w_own, w_past = torch.exp(lse - top), torch.exp(past_lse - top)
            result = (result * w_own[..., None] + past * w_past[..., None]) / (w_own + w_past)[..., None]
        out[:, rows_lo - start:rows_hi - start] = result[:, rows_lo - lo:rows_hi - lo]
    return out
