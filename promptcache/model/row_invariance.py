"""Which row counts give a matrix product's rows the same bits as a large product does.

A CPU GEMM library picks its kernel by shape. MKL's float32 kernels for a few rows (1-3, 5-7,
9-11 here) sum in another order than its kernels for 4, 8, 12 or more rows, so a decode step's
logits for one request changed with the number of requests in the batch. bfloat16 products
(oneDNN) measured invariant at every count, on AVX-512 and AVX2 alike.

Rather than hard-code one machine's table, the model probes its own products once at load:
`invariant_rows` runs a product on the first 1..PROBE_ROWS rows of a fixed random input and
keeps the counts whose rows equal those of the PROBE_ROWS-row call. A batch of another size is
padded with zero rows up to the next such count (`padded_rows`). From PROBE_ROWS rows up, rows
measured invariant up to 2,048 (benchmarks/determinism.py), and prefill chunks never have fewer
than MIN_ROWS rows when they can avoid it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

PROBE_ROWS = 16
# Prefill chunks and the suffix after a cache hit have at least this many rows when they can,
# so their products stay in the measured-invariant range even without padding.
MIN_ROWS = PROBE_ROWS


def invariant_rows(product: Callable[[torch.Tensor], torch.Tensor], in_features: int, dtype: torch.dtype,
                   device: torch.device, out_dtype: torch.dtype | None = None) -> frozenset[int]:
    """Row counts m in [1, PROBE_ROWS] at which every m-row call gives its rows the bits that
    one call over all probe rows gives them.

    A bfloat16 output hides most differences in float32 accumulation (its step is 2**-8 of the
    value), so a kernel that sums in another order shows in only about one output in 10**4:
    with such outputs the probe runs 8x as many rows, in m-row slices, so that every row count
    is seen over ~10**6 outputs (a 16-row probe passed bf16 kernels whose decode then differed
    in one layer of thirty)."""
    low_precision = (out_dtype or dtype).itemsize < 4
    rows = PROBE_ROWS * (8 if low_precision else 1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, in_features, generator=generator).to(device=device, dtype=dtype)
    reference = product(x)

    def same(m: int) -> bool:
        return all(torch.equal(product(x[i:i + m]), reference[i:i + m]) for i in range(0, rows - m + 1, m))

    return frozenset(m for m in range(1, PROBE_ROWS + 1) if same(m))


def padded_rows(rows: int, invariant: frozenset[int]) -> int:
    """The row count to compute `rows` rows at: itself if invariant, else the next invariant one."""
    if rows >= PROBE_ROWS or rows in invariant:
        return rows
    return min((m for m in invariant if m > rows), default=PROBE_ROWS)


def pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x (n, in) with zero rows appended up to `rows`."""
    if x.shape[0] == rows:
        return x
    return torch.cat([x, x.new_zeros((rows - x.shape[0], x.shape[1]))])
