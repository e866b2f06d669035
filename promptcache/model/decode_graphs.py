"""CUDA graphs for decode steps.

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
            g = self._graphs[key] = self._record(kv, len(slots), span, length)
        g.tokens.copy_(tokens)
        g.positions.copy_(torch.tensor(positions), non_blocking=True)
        g.slots.copy_(torch.tensor(slots), non_blocking=True)
        g.mask.copy_(self.model.decode_mask(positions, slots, span, length), non_blocking=True)
        g.graph.replay()
        return g.logits.clone()

    def _record(self, kv: torch.Tensor, batch: int, span: int, length: int) -> _Graph:
        device = kv.device
        tokens = torch.zeros(batch, dtype=torch.long, device=device)
        positions = torch.zeros(batch, dtype=torch.long, device=device)
        slots = torch.arange(batch, dtype=torch.long, device=device)  # valid placeholders
        mask = torch.ones(span, 1, 1, length, dtype=torch.bool, device=device)
        saved = kv[:, :, :, :, 0].clone()  # warm-up runs write position 0 of these slots

        def step() -> torch.Tensor:
            return self.model.decode_batched(tokens, positions, slots, mask, span, length, kv)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = step()
        kv[:, :, :, :, 0] = saved
        return _Graph(graph, tokens, positions, slots, mask, logits)
