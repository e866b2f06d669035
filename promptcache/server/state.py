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

from promptcache.engine.api import RequestOutput
from promptcache.server.chat import ChatRenderer
from promptcache.server.engine_loop import EngineLoop, Submission
from promptcache.server.metrics import ServerMetrics
from promptcache.server.settings import ServerSettings
from promptcache.server.tenants import KeyRing

log = logging.getLogger("promptcache.server.requests")

MAX_TRACKED_CACHE_KEYS = 10_000
OTHER_KEYS = "(other)"


class PromptCacheKeyStats:
    """Requests, prompt tokens and cached tokens per (tenant, prompt_cache_key).

    Keys are client-chosen strings, so the table is capped; once full, new keys are counted
    together under "(other)" rather than growing memory without bound.
    """

    def __init__(self, max_keys: int = MAX_TRACKED_CACHE_KEYS):
        self.max_keys = max_keys
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        self._lock = threading.Lock()

    def record(self, tenant: str, key: str | None, prompt: int, cached: int) -> None:
        slot = (tenant, key if key is not None else "(none)")
        with self._lock:
            if slot not in self._counts and len(self._counts) >= self.max_keys:
                slot = (tenant, OTHER_KEYS)
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
        log.info(
            "%s id=%s tenant=%s cache_key=%s prompt_tokens=%d cached_tokens=%d "
            "completion_tokens=%d finish=%s ttft_ms=%s",
            endpoint,
            sub.request_id,
            tenant,
            cache_key,
            last.num_prompt_tokens,
            last.num_cached_tokens,
            n,
            last.finish_reason,
            "-" if ttft is None else f"{ttft * 1000:.1f}",
        )
        if self.settings.log_prompts and prompt_text is not None:
            log.info("prompt id=%s text=%r", sub.request_id, prompt_text)
