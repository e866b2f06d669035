"""One sequence's live grammar, and the token masks of a step.

The mask of step t depends only on the tokens accepted up to step t-1, so it is computed while
the model runs step t (`MaskBatch.start` before the forward pass, `MaskBatch.wait` after it),
on one worker thread; the grammar library releases the GIL while it computes, so the two
overlap. Masking is applied per row to the float32 logits after the model: a row's mask never
touches another row, and greedy within the mask is still argmax, the lowest id winning ties.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import torch

from promptcache.engine.structured.compiler import CompiledGrammar

_BITS = torch.arange(32, dtype=torch.int32)


class Constraint:
    """The grammar state of one request: which tokens may come next, and whether it is done."""

    def __init__(self, compiled: CompiledGrammar):
        self.matcher = compiled.new_matcher()

    def accept(self, token: int) -> bool:
        """Follow a sampled token; False when the grammar refuses it (it never should: the
        token was drawn under this grammar's mask)."""
        return self.matcher.consume_token(token)

    @property
    def finished(self) -> bool:
        """The grammar is complete and admits nothing more: the reply ends here ("stop")."""
        return self.matcher.is_stopped()

    @property
    def error(self) -> str:
        return self.matcher.get_error()


def allowed(bitmask_row: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The bool mask (V,) packed in an int32 bitmask row (ceil(V/32),), bit i of word w = token
    32w + i."""
    bits = (bitmask_row.unsqueeze(-1) >> _BITS) & 1
    return bits.flatten()[:vocab_size].bool()


def apply_mask(logits_row: torch.Tensor, bitmask_row: torch.Tensor) -> torch.Tensor:
    """A copy of the float32 logits (1, V) with every token the grammar forbids at float32's
    lowest value. Finite, so the sampler's check for broken logits still reads the model's own
    values; softmax gives those tokens probability exactly zero. ValueError when nothing is
    allowed (a grammar in an error state)."""
    mask = allowed(bitmask_row, logits_row.shape[-1]).to(logits_row.device)
    if not bool(mask.any()):
        raise ValueError("the output grammar allows no next token")
    return logits_row.masked_fill(~mask, torch.finfo(logits_row.dtype).min)


class MaskBatch:
    """Token masks for the constrained rows of one step, computed on a worker thread."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self._executor = llguidance.LLExecutor(num_threads=1)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-mask")

    def start(self, constraints: list[Constraint | None]) -> Future | None:
        """Begin computing one mask row per entry (None rows are left all-allowed)."""
        rows = [(c.matcher, i) for i, c in enumerate(constraints) if c is not None]
        if not rows:
            return None
        # Imported here, not at the top: llguidance.torch decorates a helper we do not use with
        # torch.compile, which imports torch._dynamo (over a second on every process start).
        import llguidance.torch as llg_torch

        bitmask = llg_torch.allocate_token_bitmask(len(constraints), self.vocab_size)

        def fill() -> torch.Tensor:
            llg_torch.fill_next_token_bitmask_par(self._executor, rows, bitmask)
            return bitmask

        return self._thread.submit(fill)

    @staticmethod
    def wait(pending: Future | None) -> torch.Tensor | None:
        return None if pending is None else pending.result()
