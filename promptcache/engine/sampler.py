"""Choosing the next token from logits: greedy, temperature, min-p, top-k, top-p, seeded.

Everything reads the model's float32 logits. Greedy (temperature below MIN_TEMPERATURE) is
argmax, and a tie goes to the lowest token id (torch.argmax returns the first maximum, on CPU
and CUDA alike); it needs no randomness, and it is what the cache-on equals cache-off guarantee
is stated for. Sampling scales the logits in float32 by a temperature of at least 1e-5, so no
logit overflows; a row that still holds a non-finite value is refused (SamplingError) rather than
handed to torch.multinomial. Sampled requests draw from their own torch.Generator, seeded
from the request's seed when it has one, so a seeded request replays exactly whatever else is in
the batch. Penalties and biases are applied to the row before it gets here (penalties.py);
min_p, like top-k and top-p, only narrows a draw, so greedy never reads it.
"""

from __future__ import annotations

import torch

from promptcache.engine.api import SamplingParams


class SamplingError(ValueError):
    """This row's logits cannot be sampled from (non-finite): the request fails, not the batch."""


def new_generator(params: SamplingParams) -> torch.Generator | None:
    if params.greedy:
        return None
    generator = torch.Generator()
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


def _filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities (V,) after temperature, min-p, top-k and top-p (vLLM's order); logits is
    float32 (V,)."""
    logits = logits.float() / params.temperature
    if params.min_p > 0.0:
        # Keep the tokens at least min_p times as likely as the likeliest, which always stays.
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # finite: the top logit maps to exp(0) = 1
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p: drop a token when the mass before it
        # already does. The first token is always kept.
        drop = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= params.top_p
        # A top_p below float32's range (5e-324) becomes 0.0 in the comparison, which would drop
        # every token and leave 0/0 to multinomial.
        drop[0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of logits (B, V), float32, on any device."""
    if not torch.isfinite(logits).all():
        raise SamplingError("the model produced non-finite logits")
    greedy = logits.argmax(dim=-1).tolist()
    tokens = []
    for row, (p, generator) in enumerate(zip(params, generators)):
        if p.greedy:
            tokens.append(greedy[row])
            continue
        probs = _filtered_probs(logits[row].float().cpu(), p)
        tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens
