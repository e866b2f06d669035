"""A sequence: one request's state inside the engine, from waiting to finished.

The sequence owns its tokens and its KV slot number while it has one; the scheduler decides
when it gets and gives back a slot.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from promptcache.cache.keys import PromptKeys
from promptcache.engine.api import FinishReason, Request
from promptcache.engine.detokenizer import IncrementalDetokenizer


class Status(enum.Enum):
    WAITING = "waiting"  # queued, no slot yet
    PREFILL = "prefill"  # has a slot; prompt being computed chunk by chunk
    RUNNING = "running"  # in the decode batch
    PAUSED = "paused"  # preempted for another tenant: no slot, its KV parked until it resumes
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request: Request
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator | None
    arrival: float = field(default_factory=time.monotonic)
    status: Status = Status.WAITING
    slot: int | None = None
    num_computed: int = 0  # prompt positions whose KV is in the slot
    num_cached: int = 0  # of those, positions copied from the prefix cache
    cached_tiers: dict[str, int] = field(default_factory=dict)  # num_cached by the tier that held them
    output_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    waited_steps: int = 0  # admissions of its own tenant while it waited (for anti-starvation)
    parked: torch.Tensor | None = None  # the KV of a paused sequence, held off its slot (preemption.py)
    error: str | None = None  # why the sequence failed, when finish_reason is "error"
    prompt_keys: PromptKeys | None = None  # the prompt's cache block keys, hashed once
    constraint: object | None = None  # the output grammar's live state (structured/constraint.py)
    # Prompt logprobs (engine/logprobs.py): one record per prompt token, from the cache or computed.
    prompt_records: object | None = None
    # Positions before the end of the cached prefix that are computed again: a prompt-logprob
    # request needs the logits of the last cached row (the next token's logprob comes from it).
    rewind: int = 0
    last_logprob: object | None = None  # the record of the token sampled last (with logprobs)
    prompt_sent: bool = False  # the prompt's logprobs went out (with the first output)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def tenant(self) -> str:
        return self.request.cache.tenant

    @property
    def prompt(self) -> list[int]:
        return self.request.prompt_tokens

    @property
    def num_prompt(self) -> int:
        return len(self.request.prompt_tokens)

    @property
    def length(self) -> int:
        """Tokens whose KV is (or is being) in the slot: prompt plus generated so far."""
        return self.num_prompt + len(self.output_ids)

    @property
    def all_ids(self) -> list[int]:
        return self.request.prompt_tokens + self.output_ids
