"""Penalties and biases on one sequence's row of logits, before the draw.

OpenAI's `logit_bias`, `presence_penalty` and `frequency_penalty`, and vLLM's
`repetition_penalty`, in vLLM's order: the bias is added first, then the repetition penalty
divides a positive logit (multiplies a negative one) of every token seen in the prompt or the
output, then each token generated so far loses frequency x its count and presence once.

Every operation is element by element on the float32 row, on the CPU: each logit out depends only
on that logit of the model's row and on the sequence's own token ids. So a row penalized in a
batch is bitwise the row penalized alone (batch invariance), and a prompt read from the cache
gives the row a computed one gives (cache on = off): the counts come from token ids, never KV.
The row comes back on the CPU, where the sampler draws; the output grammar's mask goes on after.
"""

from __future__ import annotations

import torch

from promptcache.engine.api import SamplingParams


def penalize(logits: torch.Tensor, params: SamplingParams, prompt: list[int], output: list[int]) -> torch.Tensor:
    """The row (1, V) with params' penalties and biases applied; the row itself when none is set."""
    if not params.penalized:
        return logits
    row = logits[0].to(device="cpu", dtype=torch.float32, copy=True)
    vocab = row.shape[-1]
    if params.logit_bias:  # ids are unique (SamplingParams.validate): one addition each
        ids = torch.tensor([token for token, _ in params.logit_bias])
        row[ids] += torch.tensor([bias for _, bias in params.logit_bias], dtype=torch.float32)
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(vocab, dtype=torch.bool)
        seen[torch.tensor(prompt + output, dtype=torch.long)] = True
        penalty = params.repetition_penalty
        row = torch.where(seen, torch.where(row > 0, row / penalty, row * penalty), row)
    if output and (params.frequency_penalty or params.presence_penalty):
        counts = torch.bincount(torch.tensor(output, dtype=torch.long), minlength=vocab)[:vocab].float()
        row = row - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).float()
    return row[None]
