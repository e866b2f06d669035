"""The neutral request spec: what every dialect's body becomes before the engine sees it.

A dialect parses its own body, renders its prompt to tokens (with a role per token), and fills
a `GenerationSpec`: sampling knobs, cache options, the cache key label and the end user. The
tenant is never in a body; it comes from the caller's key (`deps.tenant_of`). From here on
nothing depends on which dialect the request arrived in, so one prompt sent through any
dialect reads and writes the same cache entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from promptcache.engine.api import CacheOptions, Role, SamplingParams


@dataclass(frozen=True)
class SamplingSpec:
    max_tokens: int | None = None  # None: up to the context, capped by default_max_tokens
    temperature: float | None = None  # None: 1.0, as OpenAI and Anthropic default
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    logprobs: int | None = None  # top alternatives per generated token (None: no logprobs)
    prompt_logprobs: int | None = None  # the prompt's logprobs, served from the cache (None: none)
    # Penalties and biases (engine/penalties.py); None: not applied.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias), ids unique
    min_p: float | None = None


@dataclass(frozen=True)
class CacheSpec:
    enabled: bool = True  # False: this request neither reads nor writes the cache
    salt: str | None = None  # a client partition inside the caller's tenant
    ttl_s: float | None = None  # lifetime of the blocks this request inserts (None: the cache's default)
    cache_key: str | None = None  # a label for stats and logs; never changes what hits
    end_user: str | None = None  # logged; with --isolate-by user it partitions the cache
    # Explicit breakpoints (Anthropic's cache_control): (prompt token index, TTL label), in order.
    breakpoints: tuple[tuple[int, str], ...] = ()
    # Leading segments that live longer than ttl_s: (prompt token index, seconds).
    ttl_segments: tuple[tuple[int, float], ...] = ()
    # Retention (server/retention.py): the session or cached content that keeps this request's
    # blocks pinned, and whether the reply's blocks are kept too (a session's next turn reads them).
    pin_owner: str | None = None
    cache_reply: bool = False


@dataclass
class GenerationSpec:
    endpoint: str  # the log and metrics name: chat, completions, messages, responses
    request_id: str
    tenant: str
    tokens: list[int]
    roles: list[Role] | None = None
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    cache: CacheSpec = field(default_factory=CacheSpec)
    prompt_text: str | None = None  # only ever logged with --log-prompts
    structure: object | None = None  # a compiled output grammar (server/structured/compile.py)
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (e.g. ignored keywords)


def sampling_params(spec: SamplingSpec, n_prompt: int, context_length: int, default_max_tokens: int) -> SamplingParams:
    """SamplingSpec -> the engine's SamplingParams. With no limit given the reply may fill the
    context, capped by the server's default_max_tokens (as OpenAI's default is 'up to the context')."""
    limit = spec.max_tokens
    if limit is None:
        limit = max(1, min(default_max_tokens, context_length - n_prompt))
    temperature = 1.0 if spec.temperature is None else spec.temperature
    top_p = 1.0 if spec.top_p is None else spec.top_p
    if top_p == 0.0:  # the limit of nucleus sampling as p -> 0 is greedy
        temperature, top_p = 0.0, 1.0
    params = SamplingParams(
        max_tokens=limit, temperature=temperature, top_p=top_p, top_k=spec.top_k or 0, seed=spec.seed,
        stop=tuple(s for s in spec.stop if s),  # an empty stop string would stop at once
        ignore_eos=spec.ignore_eos, skip_special_tokens=spec.skip_special_tokens,
        logprobs=spec.logprobs, prompt_logprobs=spec.prompt_logprobs,
        presence_penalty=spec.presence_penalty or 0.0, frequency_penalty=spec.frequency_penalty or 0.0,
        repetition_penalty=1.0 if spec.repetition_penalty is None else spec.repetition_penalty,
        logit_bias=spec.logit_bias, min_p=spec.min_p or 0.0,
    )
    params.validate()
    return params


def namespace_salt(isolate_by: str | None, salt: str | None, end_user: str | None) -> str | None:
    """The salt the cache sees. With --isolate-by user it is (end user, salt) as one JSON
    string, always, so that no salt a client sends can equal another user's namespace; the
    requests that name no user share one namespace of their own."""
    if isolate_by != "user":
        return salt
    return json.dumps([end_user, salt], ensure_ascii=False)


def cache_options(spec: CacheSpec, tenant: str, isolate_by: str | None) -> CacheOptions:
    """The tenant comes from the API key, never the body; the salt partitions inside it."""
    return CacheOptions(
        enabled=spec.enabled, tenant=tenant, salt=namespace_salt(isolate_by, spec.salt, spec.end_user),
        ttl_s=spec.ttl_s, cache_key=spec.cache_key, pin_owner=spec.pin_owner, cache_reply=spec.cache_reply,
        ttl_segments=spec.ttl_segments,
    )
