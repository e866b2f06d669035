"""CUDA graphs for decode steps and for short prefills after a prefix-cache hit.

On a GPU a decode step of a 32-layer model is ~800 kernel launches, and launching them from
Python took longer (~15 ms on the 8B shape) than the GPU's work for batch 1 (~10 ms of weight
reads). A CUDA graph records the step once and replays it with one launch.

A graph has fixed shapes, so one is recorded per (KV tensor, batch size, slots spanned, key
length bucket): keys are read up to the bucket's end under a mask, the positions, slots and mask
live in static input buffers that each replay overwrites. Graphs are recorded lazily, the first
time a shape is met, and live as long as this object (they hold their own memory pool).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BUCKET = 256  # key-length granularity: attention reads at most BUCKET - 1 masked keys too


def _record(step) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Run `step` once on a side stream (to settle allocations and library workspaces, as CUDA
    graph capture requires), then capture it; returns the graph and its static output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = step()
    return graph, output


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # (B,) static inputs ...
    positions: torch.Tensor  # (B,)
    slots: torch.Tensor  # (B,)
    mask: torch.Tensor  # (span, 1, 1, length)
    logits: torch.Tensor  # (B, V) static output


class DecodeGraphs:
    def __init__(self, model):
        self.model = model
        self._graphs: dict[tuple, _Graph] = {}

    def run(self, tokens: torch.Tensor, positions: list[int], slots: list[int], kv: torch.Tensor) -> torch.Tensor:
        span = max(slots) + 1
        length = min(-(-(max(positions) + 1) // BUCKET) * BUCKET, kv.shape[4])
        key = (kv.data_ptr(), len(slots), span, length)
        g = self._graphs.get(key)
        if g is None:
            g = self._graphs[key] = self._new_graph(kv, len(slots), span, length)
        g.tokens.copy_(tokens)
        g.positions.copy_(torch.tensor(positions), non_blocking=True)
        g.slots.copy_(torch.tensor(slots), non_blocking=True)
        g.mask.copy_(self.model.decode_mask(positions, slots, span, length), non_blocking=True)
        g.graph.replay()
        return g.logits.clone()

    def _new_graph(self, kv: torch.Tensor, batch: int, span: int, length: int) -> _Graph:
        device = kv.device
        tokens = torch.zeros(batch, dtype=torch.long, device=device)
        positions = torch.zeros(batch, dtype=torch.long, device=device)
        slots = torch.arange(batch, dtype=torch.long, device=device)  # valid placeholders
        mask = torch.ones(span, 1, 1, length, dtype=torch.bool, device=device)
        saved = kv[:, :, :, :, 0].clone()  # warm-up runs write position 0 of these slots

        graph, logits = _record(lambda: self.model.decode_batched(tokens, positions, slots, mask, span, length, kv))
        kv[:, :, :, :, 0] = saved
        return _Graph(graph, tokens, positions, slots, mask, logits)


PREFILL_ROWS = 32  # suffix-length granularity: a graphed prefill computes up to 31 padding rows
MAX_GRAPHED_PREFILL = 256  # longer chunks have enough work per kernel to hide the launches


@dataclass
class _PrefillGraph:
    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # (rows,) static inputs, padded with token 0 ...
    positions: torch.Tensor  # (rows,) start, start + 1, ...
    mask: torch.Tensor  # (rows, length)
    last: torch.Tensor  # (1,) index of the last real row
    logits: torch.Tensor  # (1, V) static output


class PrefillGraphs:
    """CUDA graphs for short prefill chunks that follow cached KV (a prefix-cache hit's suffix).

    Such a chunk on a large model is launch-bound as a decode step is. Rows are padded to a
    multiple of PREFILL_ROWS with token 0: the padding rows write K/V past the prompt's end,
    where nothing reads before a later step overwrites it, and never reach the prefix cache
    (which saves prompt positions only).
    """

    def __init__(self, model):
        self.model = model
        self._graphs: dict[tuple, _PrefillGraph] = {}

    def fits(self, start: int, count: int, kv: torch.Tensor) -> bool:
        rows = -(-count // PREFILL_ROWS) * PREFILL_ROWS
        return 0 < start and count <= MAX_GRAPHED_PREFILL and start + rows <= kv.shape[4]

    def run(self, tokens: torch.Tensor, start: int, slot: int, kv: torch.Tensor) -> torch.Tensor:
        count = tokens.shape[0]
        rows = -(-count // PREFILL_ROWS) * PREFILL_ROWS
        length = min(-(-(start + rows) // BUCKET) * BUCKET, kv.shape[4])
        key = (kv.data_ptr(), slot, rows, length)
        g = self._graphs.get(key)
        if g is None:
            g = self._graphs[key] = self._new_graph(kv, slot, rows, length)
        g.tokens.zero_()
        g.tokens[:count].copy_(tokens)
        g.positions.copy_(torch.arange(start, start + rows), non_blocking=True)
        mask = torch.arange(length)[None, :] <= torch.arange(start, start + rows)[:, None]
        g.mask.copy_(mask, non_blocking=True)
        g.last.fill_(count - 1)
        g.graph.replay()
        return g.logits[0].clone()

    def _new_graph(self, kv: torch.Tensor, slot: int, rows: int, length: int) -> _PrefillGraph:
        device = kv.device
        tokens = torch.zeros(rows, dtype=torch.long, device=device)
        positions = torch.arange(length - rows, length, dtype=torch.long, device=device)  # past the end
        mask = torch.ones(rows, length, dtype=torch.bool, device=device)
        last = torch.zeros(1, dtype=torch.long, device=device)
        saved = kv[:, :, slot, :, length - rows:length].clone()  # the warm-up writes there

        graph, logits = _record(lambda: self.model.prefill_static(tokens, positions, mask, last, slot, length, kv))
        kv[:, :, slot, :, length - rows:length] = saved
        return _PrefillGraph(graph, tokens, positions, mask, last, logits)
