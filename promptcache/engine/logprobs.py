"""Log-probabilities of tokens: the generated ones, and the prompt's.

What a logprob is here ("raw", vLLM's default mode): the log_softmax of the model's float32
logits for that position, before temperature, top-k/top-p and any output-grammar mask. So a
generated token's logprob is the model's, whatever sampling chose it, and a prompt token's is
the same number a cold prefill gives (the rows are chunk- and batch-invariant, docs/design.md).

Every token's record is one `RECORD`: its logprob, its rank (1 + the number of tokens more
likely than it, as vLLM counts), and the MAX_TOP most likely tokens with their logprobs, most
likely first, ties by lower id. A record is 168 bytes; a prompt's records are kept with the
cached blocks that hold its tokens (logprobs_store.py). A request asking for k < MAX_TOP
alternatives gets the first k of the same record, so every k is served from one stored record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy
import torch

from promptcache.engine.api import MAX_LOGPROBS
MAX_TOP = MAX_LOGPROBS  # alternatives kept per token: every request's k is a prefix of them

RECORD = numpy.dtype([("logprob", "<f4"), ("rank", "<i4"), ("top_ids", "<i4", (MAX_TOP,)),
                      ("top_logprobs", "<f4", (MAX_TOP,))])

# Rows of logits computed at once for prompt logprobs: bounds the float32 (rows, vocab) tensor
# (64 x 49,152 x 4 B = 12 MiB) whatever the prefill chunk's size.
ROWS_PER_SLICE = 64


@dataclass(frozen=True)
class TokenLogprob:
    """One token's logprob and its top alternatives (token id, logprob), most likely first."""

    token_id: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...]


def empty_records(n: int) -> numpy.ndarray:
    """n records with no value yet (NaN logprobs): a prompt's first token never gets one."""
    out = numpy.zeros(n, dtype=RECORD)
    out["logprob"] = numpy.nan
    return out


def records(logits: torch.Tensor, tokens: torch.Tensor) -> numpy.ndarray:
    """The record of tokens[r] under row r of float32 logits (rows, V)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    chosen = lp.gather(1, tokens[:, None].to(lp.device))  # (rows, 1)
    rank = (lp > chosen).sum(dim=1) + 1
    top = torch.topk(lp, MAX_TOP, dim=-1)
    out = numpy.zeros(logits.shape[0], dtype=RECORD)
    out["logprob"] = chosen[:, 0].cpu().numpy()
    out["rank"] = rank.cpu().numpy()
    values, ids = top.values.cpu().numpy(), top.indices.cpu().numpy().astype(numpy.int32)
    # topk's order among equal values is the kernel's; sort ties by token id, so a record
    # never depends on it.
    order = numpy.lexsort((ids, -values), axis=-1)
    out["top_ids"] = numpy.take_along_axis(ids, order, axis=-1)
    out["top_logprobs"] = numpy.take_along_axis(values, order, axis=-1)
    return out


def prompt_records(logits_of, hidden: torch.Tensor, start: int, prompt: list[int]) -> numpy.ndarray:
    """Records of prompt tokens start + 1 .. start + R, where hidden (R, E) holds the final
    hidden states of positions start .. start + R - 1 and `logits_of` is the model's head
    (row-invariant: a row's logits are the same bits in any slice). Positions past the
    prompt's second to last have no next prompt token and are skipped."""
    rows = min(hidden.shape[0], len(prompt) - 1 - start)
    parts = []
    for a in range(0, rows, ROWS_PER_SLICE):
        b = min(rows, a + ROWS_PER_SLICE)
        nxt = torch.tensor(prompt[start + a + 1:start + b + 1], dtype=torch.long)
        parts.append(records(logits_of(hidden[a:b]), nxt))
    return numpy.concatenate(parts) if parts else empty_records(0)


def as_token_logprob(token_id: int, record) -> TokenLogprob:
    ids, lps = record["top_ids"].tolist(), record["top_logprobs"].tolist()
    return TokenLogprob(token_id, float(record["logprob"]), int(record["rank"]), tuple(zip(ids, lps)))


def prompt_logprobs(prompt: list[int], recs: numpy.ndarray) -> list[TokenLogprob | None]:
    """The prompt's logprobs as the engine reports them: None for the first token."""
    return [None] + [as_token_logprob(t, recs[i]) for i, t in enumerate(prompt) if i > 0]

