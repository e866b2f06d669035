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
mask (a square, so torch's causal mode applies; the blocks of a chunk share one batched call).
The two partial results are merged by their log-sum-exps, elementwise. Every product a row takes part in therefore has the same shape
whichever chunk the row came in, over the same keys: the row is bitwise the same.

Cost: padding rows, and two calls per block instead of one per chunk; docs/benchmarks.md.
"""

from __future__ import annotations

import torch

GRID = 16  # query rows per block: the cache's block size, so a hit's suffix starts on a grid line.
# Against SDPA (benchmarks/determinism.py), a cold 1,536-token prefill ran at 0.93x with 16,
# ~1.0x with 32 or 64, while a 20-token suffix after 1,500 cached tokens took 81 ms with 16
# (SDPA: 69-91 ms), 116 ms with 32 and 123-152 ms with 64: padding rows cost a short suffix most.

# The fused CPU kernel behind SDPA, called directly because it also returns the log-sum-exp.
_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def grid_end(end: int) -> int:
    """The key length the last block of a chunk ending at `end` reads: end rounded up to GRID."""
    return -(-end // GRID) * GRID


def grid_prefill_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> torch.Tensor:
    """Causal attention of query rows at positions [start, start + T) over a slot's keys.

    q: (Hq, T, D) float; keys, values: (Hkv, >= grid_end(start + T), D), holding every position
    up to start + T (positions past it are only seen by padding rows, and must be finite).
    Returns (Hq, T, D).

    The blocks' own-key calls are one batched call (each batch entry is computed alone, so the
    batch size does not change a block's bits); the earlier keys take one call per block, since
    their count differs by block.
    """
    Hq, T, D = q.shape
    Hkv = keys.shape[0]
    group = Hq // Hkv
    end = start + T
    first = start // GRID
    num = (end - 1) // GRID - first + 1
    lo = first * GRID  # the first block's first position
    padded = q.new_zeros((Hq, num * GRID, D))
    padded[:, start - lo:end - lo] = q
    blocks = padded.view(Hq, num, GRID, D).transpose(0, 1).contiguous()  # (num, Hq, GRID, D)

    def own(cache: torch.Tensor) -> torch.Tensor:  # each block's own GRID keys, per query head
        return cache[:, lo:lo + num * GRID].view(Hkv, num, GRID, D).transpose(0, 1).repeat_interleave(group, dim=1)

    result, lse = _flash(blocks, own(keys), own(values), 0.0, True)  # (num, Hq, GRID, D), (num, Hq, GRID)
    past = torch.zeros_like(result)
    past_lse = torch.full_like(lse, float("-inf"))  # block 0 has no earlier keys: weight 0
    for b in range(num):
        before = lo + b * GRID
        if before == 0:
            continue
        # Every earlier key is visible to every row: GQA heads ride as extra rows of one call.
        out, out_lse = _flash(blocks[b].view(1, Hkv, group * GRID, D), keys[None, :, :before],
                              values[None, :, :before], 0.0, False)
        past[b], past_lse[b] = out.reshape(Hq, GRID, D), out_lse.reshape(Hq, GRID)
    top = torch.maximum(lse, past_lse)
    w_own, w_past = torch.exp(lse - top), torch.exp(past_lse - top)
    merged = (result * w_own[..., None] + past * w_past[..., None]) / (w_own + w_past)[..., None]
    return merged.transpose(0, 1).reshape(Hq, num * GRID, D)[:, start - lo:end - lo]
