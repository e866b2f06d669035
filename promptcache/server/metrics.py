"""Prometheus metrics for one app: request counts, token counts, latencies, cache and queue state.

Each app gets its own CollectorRegistry, so two servers in one process (tests, benchmarks)
never share or double-register series. Cache and queue figures are read from the engine when
scraped (a custom collector), not copied on every request: the engine's stats are the one
source of truth, and the hot path does no extra work for them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Paths known to the app; anything else is counted as "other" so that a scanner requesting
# random URLs cannot create unbounded label values.
KNOWN_ENDPOINTS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/cache/stats",
        "/v1/cache/flush",
        "/v1/cache/pin",
        "/v1/cache/unpin",
        "/health",
        "/metrics",
    }
)

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.19, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _EngineCollector(Collector):
    """Reads engine.cache_stats() and the queue lengths at scrape time."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "promptcache_queue_requests", "Requests in the engine by state", labels=["state"]
        )
        queue.add_metric(["waiting"], self.engine.num_waiting())
        queue.add_metric(["running"], self.engine.num_running())
        yield queue
        stats = self.engine.cache_stats(wait=False)  # never waits for the engine's step
        if not stats:
            return
        yield GaugeMetricFamily(
            "promptcache_cache_hit_ratio",
            "Prompt tokens served from the prefix cache / prompt tokens looked up",
            value=float(stats.get("token_hit_ratio") or 0.0),
        )
        yield GaugeMetricFamily(
            "promptcache_cache_blocks_held", "KV blocks held by the prefix cache",
            value=stats.get("blocks_held", 0),
        )
        yield GaugeMetricFamily(
            "promptcache_cache_bytes_held", "Bytes of KV held by the prefix cache",
            value=stats.get("bytes_held", 0),
        )
        yield GaugeMetricFamily(
            "promptcache_cache_max_bytes", "Byte budget of the prefix cache",
            value=stats.get("max_bytes", 0),
        )
        by_tenant = GaugeMetricFamily(
            "promptcache_cache_tenant_bytes_held", "Bytes of KV held per tenant", labels=["tenant"]
        )
        for tenant, nbytes in (stats.get("bytes_by_tenant") or stats.get("tenant_bytes") or {}).items():
            by_tenant.add_metric([str(tenant)], nbytes)
        yield by_tenant
        evictions = CounterMetricFamily(
            "promptcache_cache_evictions", "Blocks evicted from the prefix cache", labels=["reason"]
        )
        for reason, count in (stats.get("evictions_by_reason") or stats.get("evictions") or {}).items():
            evictions.add_metric([str(reason)], count)
        yield evictions
        for name in ("lookups", "hits", "insertions"):
            yield CounterMetricFamily(
                f"promptcache_cache_{name}", f"Prefix cache {name}", value=stats.get(name, 0)
            )
        if stats.get("tiers"):
            yield from _tier_metrics(stats)


def _tier_metrics(stats: dict) -> Iterator[Metric]:
    """Per-tier series (disk, redis, redis-cluster): docs/tiers.md."""
    tiers = stats["tiers"]
    families = {
        "blocks": CounterMetricFamily("promptcache_tier_blocks", "Blocks looked up in a lower tier, by result",
                                      labels=["tier", "result"]),
        "bytes": CounterMetricFamily("promptcache_tier_bytes", "Bytes read from and written to a lower tier",
                                     labels=["tier", "direction"]),
        "seconds": CounterMetricFamily("promptcache_tier_op_seconds", "Time spent in lower-tier operations",
                                       labels=["tier", "op"]),
        "ops": CounterMetricFamily("promptcache_tier_ops", "Lower-tier operations (batches)", labels=["tier", "op"]),
        "errors": CounterMetricFamily("promptcache_tier_errors", "Failed lower-tier operations", labels=["tier"]),
        "dropped": CounterMetricFamily("promptcache_tier_dropped_writes",
                                       "Blocks not written to a tier (queue full or breaker open)", labels=["tier"]),
        "breaker": GaugeMetricFamily("promptcache_tier_breaker_state",
                                     "Circuit breaker of a tier: 0 closed, 1 half-open, 2 open", labels=["tier"]),
    }
    for name, t in tiers.items():
        for result, key in (("hit", "hits"), ("miss", "misses"), ("corrupt", "corrupt")):
            families["blocks"].add_metric([name, result], t[key])
        families["bytes"].add_metric([name, "read"], t["bytes_read"])
        families["bytes"].add_metric([name, "written"], t["bytes_written"])
        for op in ("read", "write"):
            families["seconds"].add_metric([name, op], t[f"{op}_seconds"])
            families["ops"].add_metric([name, op], t[f"{op}_ops"])
        families["errors"].add_metric([name], t["errors"])
        families["dropped"].add_metric([name], t["dropped_writes"])
        families["breaker"].add_metric([name], t["breaker_state_value"])
    yield from families.values()
    yield GaugeMetricFamily("promptcache_tier_write_queue_blocks", "Blocks waiting to be written to the tiers",
                            value=stats.get("write_queue_blocks", 0))


class ServerMetrics:
    def __init__(self, engine):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "promptcache_requests", "HTTP requests by endpoint and status",
            ["endpoint", "status"], registry=r,
        )
        self.prompt_tokens = Counter(
            "promptcache_prompt_tokens", "Prompt tokens of finished requests", registry=r
        )
        self.cached_tokens = Counter(
            "promptcache_cached_tokens", "Prompt tokens whose KV came from the cache", registry=r
        )
        self.completion_tokens = Counter(
            "promptcache_completion_tokens", "Generated tokens of finished requests", registry=r
        )
        self.ttft = Histogram(
            "promptcache_time_to_first_token_seconds", "Request arrival to first token",
            buckets=_TTFT_BUCKETS, registry=r,
        )
        self.tpot = Histogram(
            "promptcache_time_per_output_token_seconds", "Mean gap between output tokens",
            buckets=_TPOT_BUCKETS, registry=r,
        )
        self.ignored_fields = Counter(
            "promptcache_ignored_fields", "Request fields the server does not know, ignored and named in "
            "x-ignored-fields", ["dialect"], registry=r,
        )
        r.register(_EngineCollector(engine))

    def observe_finished(
        self, *, prompt: int, cached: int, completion: int, ttft_s: float | None, tpot_s: float | None
    ) -> None:
        self.prompt_tokens.inc(prompt)
        self.cached_tokens.inc(cached)
        self.completion_tokens.inc(completion)
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if tpot_s is not None:
            self.tpot.observe(tpot_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
    """Pure ASGI middleware counting responses by endpoint and status.

    Pure ASGI rather than BaseHTTPMiddleware, which wraps `receive` and would hide client
    disconnects from streaming responses (the server relies on them to abort generation).
    """

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_ENDPOINTS else "other"
        status = {"code": 500}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
