"""What every route shares: the engine, its loop, auth, metrics, and the per-request epilogue.

`ServerState.finished` is the one place a completed request is accounted for (metrics, the
per-prompt_cache_key counts, the log line), so streaming and non-streaming, chat and text
completions cannot drift apart in what they record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from promptcache.engine.api import RequestOutput
from promptcache.server.chat import ChatRenderer
from promptcache.server.engine_loop import EngineLoop, Submission
from promptcache.server.logs import PROMPT_CHARS, log_event, quoted
from promptcache.server.metrics import ServerMetrics
from promptcache.server.openai.responses.store import ResponseStore
from promptcache.server.settings import ServerSettings
from promptcache.server.hit_sources import HitSources
from promptcache.server.tenants import KeyRing

log = logging.getLogger("promptcache.server.requests")

MAX_KEYS_PER_TENANT = 1000
OTHER_KEYS = "(other)"


class PromptCacheKeyStats:
    """Requests, prompt tokens and cached tokens per (tenant, prompt_cache_key).

    Keys are client-chosen strings, so the table is capped, per tenant: once a tenant has
    `max_keys_per_tenant` rows, its new keys are counted together under "(other)". A global cap
    let one tenant fill the table and push every other tenant's keys into "(other)". Tenants
    come from the configured keys, so their number is bounded by the configuration.
    """

    def __init__(self, max_keys_per_tenant: int = MAX_KEYS_PER_TENANT):
        self.max_keys_per_tenant = max_keys_per_tenant
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        self._per_tenant: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, tenant: str, key: str | None, prompt: int, cached: int) -> None:
        slot = (tenant, key if key is not None else "(none)")
        with self._lock:
            if slot not in self._counts:
                if self._per_tenant.get(tenant, 0) >= self.max_keys_per_tenant:
                    slot = (tenant, OTHER_KEYS)
                if slot not in self._counts:
                    self._per_tenant[tenant] = self._per_tenant.get(tenant, 0) + 1
            counts = self._counts.setdefault(
                slot, {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0}
            )
            counts["requests"] += 1
            counts["prompt_tokens"] += prompt
            counts["cached_tokens"] += cached

    def snapshot(self, tenant: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
        """{tenant: {prompt_cache_key: counts}}, a copy; only `tenant`'s when given."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        with self._lock:
            for (t, key), counts in self._counts.items():
                if tenant is None or t == tenant:
                    out.setdefault(t, {})[key] = dict(counts)
        return out


@dataclass
class ServerState:
    engine: object
    loop: EngineLoop
    settings: ServerSettings
    keys: KeyRing
    renderer: ChatRenderer
    metrics: ServerMetrics
    key_stats: PromptCacheKeyStats = field(default_factory=PromptCacheKeyStats)
    render_limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    responses: ResponseStore | None = None  # stored Responses-API responses
    records: object | None = None  # sessions, cached contents, pins (core/records.py); made on first use
    retention: object | None = None  # retained prefixes and their expiry (server/retention.py)
    prompts: object | None = None  # the prompt registry's store (server/prompts/store.py)
    hit_sources: HitSources | None = None  # cached tokens per tenant and tier (made with the metrics)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time

    def finished(
        self,
        *,
        endpoint: str,
        tenant: str,
        cache_key: str | None,
        sub: Submission,
        last: RequestOutput,
        http_id: str | None = None,
        user: str | None = None,
        prompt_text: str | None = None,
    ) -> None:
        ttft = None if sub.first_token_at is None else sub.first_token_at - sub.submitted_at
        tpot = None
        n = last.num_generated_tokens
        if sub.first_token_at is not None and sub.finished_at is not None and n > 1:
            tpot = (sub.finished_at - sub.first_token_at) / (n - 1)
        self.metrics.observe_finished(
            prompt=last.num_prompt_tokens,
            cached=last.num_cached_tokens,
            completion=n,
            ttft_s=ttft,
            tpot_s=tpot,
        )
        self.key_stats.record(tenant, cache_key, last.num_prompt_tokens, last.num_cached_tokens)
        if self.hit_sources is not None:
            self.hit_sources.record(tenant, last.num_cached_tokens, last.cached_tiers)
        log_event(
            log, endpoint, id=sub.request_id, req=http_id, tenant=tenant, cache_key=cache_key, user=user,
            prompt_tokens=last.num_prompt_tokens, cached_tokens=last.num_cached_tokens, completion_tokens=n,
            finish=last.finish_reason, ttft_ms=None if ttft is None else round(ttft * 1000, 1),
        )
        if self.settings.log_prompts and prompt_text is not None:
            log.info("prompt id=%s text=%s", sub.request_id, quoted(prompt_text, PROMPT_CHARS))
