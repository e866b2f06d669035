"""Choosing the next token from logits: greedy, temperature, top-k, top-p, seeded.

Greedy (temperature 0) is argmax and needs no randomness, which is what the cache-on equals
cache-off guarantee is stated for. Sampled requests draw from their own torch.Generator, seeded
from the request's seed when it has one, so a seeded request replays exactly whatever else is in
the batch.
"""

from __future__ import annotations

import torch

from promptcache.engine.api import SamplingParams


def new_generator(params: SamplingParams) -> torch.Generator | None:
    if params.temperature == 0:
        return None
    generator = torch.Generator()
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


def _filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities (V,) after temperature, top-k and top-p; logits is float32 (V,)."""
    logits = logits / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p: drop a token when the mass before it
        # already does. The first token is always kept.
        drop = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of logits (B, V), float32, on any device."""
    greedy = logits.argmax(dim=-1).tolist()
    tokens = []
    for row, (p, generator) in enumerate(zip(params, generators)):
        if p.temperature == 0:
            tokens.append(greedy[row])
            continue
        probs = _filtered_probs(logits[row].float().cpu(), p)
        tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens
