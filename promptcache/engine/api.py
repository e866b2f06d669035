"""The engine's public request and response types.

Everything above the engine (the HTTP server, the CLI, benchmarks) talks to it through these
types only: a `Request` goes in through `Engine.add_request`, and `Engine.step()` hands back
`RequestOutput` deltas. They carry no torch objects, so they can cross threads and be logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "abort", "error"]


class EngineInputError(ValueError):
    """A request the engine cannot run: empty prompt, too long for the context, bad parameter.

    `param` names the offending request field so that a server can report it (OpenAI's
    error shape has a `param` member).
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# Temperatures below this are greedy, as in vLLM: dividing logits by 1e-40 overflowed to inf and
# made the sampler raise inside the engine step.
MIN_TEMPERATURE = 1e-5

# The most top alternatives a logprobs request may ask for, per token (vLLM's bound).
MAX_LOGPROBS = 20

# Seeds are OpenAI's int64 in every dialect: torch.Generator.manual_seed raises past 2**64 - 1,
# and a seed that reached it unchecked used to fail every request in flight (issue 25).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# OpenAI's bounds: presence and frequency penalties in -2..2; logit_bias at most 300 token ids,
# each biased by -100..100.
MAX_PENALTY = 2.0
MAX_LOGIT_BIAS = 100.0
MAX_LOGIT_BIAS_TOKENS = 300
# vLLM's repetition_penalty is any positive number; these bounds keep a float32 logit divided or
# multiplied by it finite, so a valid request can never fail as "non-finite logits".
REPETITION_PENALTY_RANGE = (0.01, 10.0)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. Temperatures below MIN_TEMPERATURE (0 included) mean greedy:
    argmax of the float32 logits, the lowest token id winning a tie, on every device."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True  # as in vLLM: special tokens are not part of the text
    # Logprobs (engine/logprobs.py), None: not computed. `logprobs`: each generated token's, with
    # that many top alternatives (0..20); `prompt_logprobs`: the prompt's, served from the cache.
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    # Penalties and biases (engine/penalties.py), applied to the float32 logits before the draw,
    # greedy included. presence/frequency: OpenAI's, over the tokens generated so far;
    # repetition: vLLM's, over prompt and output; logit_bias: (token id, bias) pairs, ids unique.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_p: float = 0.0  # drop tokens less likely than min_p times the likeliest (sampling only)

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE

    @property
    def penalized(self) -> bool:
        """Anything to apply to the logits before the draw (False: the model's row as it is)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.logit_bias)

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise EngineInputError("max_tokens must be at least 1", "max_tokens")
        if not 0.0 <= self.temperature <= 2.0:  # also refuses NaN
            raise EngineInputError("temperature must be between 0 and 2", "temperature")
        if not 0.0 < self.top_p <= 1.0:  # also refuses NaN
            raise EngineInputError("top_p must be in (0, 1]", "top_p")
        if self.top_k < 0:
            raise EngineInputError("top_k must be >= 0", "top_k")
        if self.seed is not None and not INT64_MIN <= self.seed <= INT64_MAX:
            raise EngineInputError("seed must be a 64-bit signed integer", "seed")
        if not 0.0 <= self.min_p <= 1.0:  # also refuses NaN
            raise EngineInputError("min_p must be between 0 and 1", "min_p")
        self._validate_penalties()
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_LOGPROBS:
                raise EngineInputError(f"{name} must be between 0 and {MAX_LOGPROBS}", name)

    def _validate_penalties(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if not -MAX_PENALTY <= getattr(self, name) <= MAX_PENALTY:  # also refuses NaN
                raise EngineInputError(f"{name} must be between -{MAX_PENALTY:g} and {MAX_PENALTY:g}", name)
        low, high = REPETITION_PENALTY_RANGE
        if not low <= self.repetition_penalty <= high:
            raise EngineInputError(f"repetition_penalty must be between {low:g} and {high:g}", "repetition_penalty")
        if len(self.logit_bias) > MAX_LOGIT_BIAS_TOKENS:
            raise EngineInputError(f"logit_bias may name at most {MAX_LOGIT_BIAS_TOKENS} tokens", "logit_bias")
        if len({token for token, _ in self.logit_bias}) != len(self.logit_bias):
            raise EngineInputError("logit_bias names a token twice", "logit_bias")
        if not all(-MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS for _, bias in self.logit_bias):
            raise EngineInputError(f"logit_bias values must be between -{MAX_LOGIT_BIAS:g} and {MAX_LOGIT_BIAS:g}",
                                   "logit_bias")


@dataclass(frozen=True)
class CacheOptions:
    """Per-request prompt-cache settings.

    The namespace of every cache entry is (model fingerprint, tenant, salt): requests that
    differ in tenant or salt never share an entry. `tenant` comes from the authenticated
    identity (the server sets it; clients cannot choose it); `salt` is a client-chosen
    partition inside that tenant.
    """

    enabled: bool = True  # False: the cache is neither read nor written for this request
    tenant: str = "default"
    salt: str | None = None
    ttl_s: float | None = None  # time-to-live of entries this request inserts (None: default)
    # Longer lifetimes for leading segments (Anthropic's 1h breakpoints before 5m ones): (prompt
    # token index, ttl_s) pairs; the full blocks before each index live at least that long.
    ttl_segments: tuple[tuple[int, float], ...] = ()
    cache_key: str | None = None  # OpenAI's prompt_cache_key: kept in stats and logs only
    # Also insert the full blocks of the generated reply. Off by default: decode computes those
    # rows one at a time, so a later turn reusing them matches a cold prefill only within float
    # tolerance, not bitwise (docs/design.md); the next turn's prefill caches them exactly.
    cache_reply: bool = False
    # Retention (cache/retained.py): the owner (a session, a cached content, a pin) that keeps
    # this request's cached blocks pinned. Admitted against the tenant's pin budget when the
    # request is added, before any KV is computed; pinned in the same step as the insert.
    pin_owner: str | None = None


@dataclass
class Request:
    request_id: str
    prompt_tokens: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    cache: CacheOptions = field(default_factory=CacheOptions)
    # One role per prompt token (system/user/assistant/tool), for role-tiered eviction.
    # None: every block is tagged "user".
    token_roles: list[Role] | None = None
    # A compiled output grammar (`Engine.grammars.compile(StructureSpec)`): every token is drawn
    # among those it allows, and the reply stops when it is complete. None: unconstrained.
    structure: object | None = None


@dataclass
class RequestOutput:
    """One step's news for one request: the text and tokens produced since the last output.

    `new_text` never ends in half a UTF-8 character and never contains a stop string (the
    text is cut before it). Token counts are totals so far.
    """

    request_id: str
    new_text: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None
    num_prompt_tokens: int
    num_cached_tokens: int  # prompt tokens whose KV came from the prefix cache
    num_generated_tokens: int
    error: str | None = None  # with finish_reason "error": what failed (no internals: safe to show)
    # With SamplingParams.logprobs: one TokenLogprob (engine/logprobs.py) per new token id.
    new_logprobs: list | None = None
    # With SamplingParams.prompt_logprobs, in the first output: one per prompt token, None first.
    prompt_logprobs: list | None = None
    # num_cached_tokens by the storage tier that held them ("memory", "disk", "redis", ...);
    # lower tiers promote their blocks into memory before the read, and are counted as theirs.
    cached_tiers: dict[str, int] | None = None


@dataclass
class Completion:
    """The whole result of one request, as returned by `Engine.generate`."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    num_prompt_tokens: int
    num_cached_tokens: int
