"""Starting the scale-out: Ray, the replicas as a Ray Serve application, the ingress app.

Layout (docs/deployment.md): this process serves HTTP on the usual host and port with the
single server's app (`ingress.py`), and holds the Ray Serve handle, hence the router, of the
`promptcache-engine` deployment: N `EngineReplica`s, each with its own engine and memory
cache, on a local Ray instance started here or on the cluster at `--ray-address`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from promptcache.scaleout.book import RouterBook
from promptcache.scaleout.scoring import MODES, Weights
from promptcache.server.settings import ServerSettings

log = logging.getLogger("promptcache.scaleout")

APP = "promptcache"
DEPLOYMENT = "promptcache-engine"


@dataclass(frozen=True)
class ScaleOut:
    replicas: int
    router: str = "prefix"
    ray_address: str | None = None  # None: start a local Ray instance
    num_cpus: float | None = None  # a local instance's CPUs (default: this machine's)
    object_store_mb: int = 100  # a local instance's object store: requests and deltas are small
    stats_period_s: float = 1.0  # how often each replica reports its blocks
    stale_after_s: float = 5.0  # a report older than this is not routed on
    overlap_weight: float = 1.0
    replica_cpus: float | None = None  # CPUs Ray reserves for each replica, and its torch threads (whole ones)

    def __post_init__(self):
        if self.replicas < 1:
            raise ValueError("--replicas must be at least 1")
        if self.router not in MODES:
            raise ValueError(f"--router must be one of {', '.join(MODES)}")
        cpus = self.replica_cpus
        if cpus is not None:
            if not (math.isfinite(cpus) and cpus > 0):
                raise ValueError("--replica-cpus must be a positive number of CPUs")
            have = self.num_cpus or os.cpu_count() or 1
            if not self.ray_address and cpus * self.replicas > have:  # the rest would wait for CPUs forever
                raise ValueError(f"--replica-cpus {cpus:g} for {self.replicas} replicas needs {cpus * self.replicas:g} "
                                 f"CPUs; this machine's Ray has {have:g}")

    def per_replica(self, cluster_cpus: float) -> tuple[float, int]:
        """(CPUs Ray reserves for each replica, torch threads each runs): --replica-cpus when
        given; else on a local Ray the machine's CPUs split evenly, on a cluster one CPU."""
        if self.replica_cpus is not None:
            share = self.replica_cpus
        else:
            share = cluster_cpus / self.replicas if not self.ray_address else 1.0
        return share, max(1, int(share))


def start_ray(cfg: ScaleOut) -> None:
    """Connect to the cluster at cfg.ray_address, or start a small local instance."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, namespace=APP, log_to_driver=False)
        else:
            ray.init(num_cpus=cfg.num_cpus or os.cpu_count() or 1, object_store_memory=cfg.object_store_mb * 2**20,
                     include_dashboard=False, namespace=APP, log_to_driver=False)
    serve.start(http_options={"location": "NoServer"})  # HTTP is served by the ingress app


def _cpus(cfg: ScaleOut) -> float:
    import ray

    return cfg.num_cpus or float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))


def deploy(settings: ServerSettings, cfg: ScaleOut):
    """Run the replicas as the Ray Serve application `promptcache`; returns its handle."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from promptcache.scaleout.replica import EngineReplica

    share, threads = cfg.per_replica(_cpus(cfg))
    router = RequestRouterConfig(
        request_router_class="promptcache.scaleout.router.PromptCacheRouter",
        request_router_kwargs=dict(book=APP, mode=cfg.router, block_size=settings.block_size,
                                   overlap_weight=cfg.overlap_weight, overload_requests=settings.max_batch_size,
                                   stale_after_s=cfg.stale_after_s, recent_ttl_s=cfg.stale_after_s),
        request_routing_stats_period_s=cfg.stats_period_s,
        request_routing_stats_timeout_s=max(cfg.stats_period_s, 5.0),
    )
    deployment = serve.deployment(
        EngineReplica, name=DEPLOYMENT, num_replicas=cfg.replicas,
        # The replica's own queue answers 429s; Serve only must not hold requests back first.
        max_ongoing_requests=settings.max_queue + settings.max_batch_size,
        ray_actor_options={"num_cpus": share},
        request_router_config=router,
        health_check_period_s=2.0, health_check_timeout_s=30.0,
        graceful_shutdown_timeout_s=5.0, graceful_shutdown_wait_loop_s=0.5,  # an idle replica stops at once
    )
    return serve.run(deployment.bind(settings.without_secrets(), threads), name=APP, route_prefix=None)


def book_of(settings: ServerSettings, cfg: ScaleOut) -> RouterBook:
    """The router's book, made here with the settings the router is deployed with."""
    from promptcache.scaleout.book import book_for

    return book_for(APP, mode=cfg.router, block_size=settings.block_size,
                    weights=Weights(cfg.overlap_weight, settings.max_batch_size),
                    stale_after_s=cfg.stale_after_s, recent_ttl_s=cfg.stale_after_s)


def ingress_app(settings: ServerSettings, cfg: ScaleOut, handle):
    """The single server's app, in front of the replicas behind `handle`."""
    from promptcache.model.source import open_model
    from promptcache.scaleout.hints import RoutingHints
    from promptcache.scaleout.ingress import ClusterEngine, RoutedLoop
    from promptcache.scaleout.metrics import RouterCollector
    from promptcache.scaleout.shared import ClusterTenantLimit, SharedBlocks
    from promptcache.server.app import create_app

    info = handle.describe.remote().result(timeout_s=120)
    engine = ClusterEngine(open_model(settings.model), info)
    book = book_of(settings, cfg)
    shared = cluster_limit = None
    limit = settings.tenant_request_limit(open_server=settings.key_ring().open)
    if settings.redis_url:
        from promptcache.tiers.redis_store import RedisStore

        store = RedisStore(settings.redis_url, prefix=settings.tier_config().redis_prefix)
        shared = SharedBlocks(store)
        if limit is not None:
            cluster_limit = ClusterTenantLimit(store, limit)
    loop = RoutedLoop(engine, handle, book, max_queue=settings.max_queue * cfg.replicas,
                      max_per_tenant=limit, shared=shared, cluster_limit=cluster_limit)
    app = create_app(engine, settings, loop=loop)
    app.add_middleware(RoutingHints)
    app.state.promptcache.metrics.registry.register(RouterCollector(book))
    app.state.router_book = book
    return app


def shutdown(cfg: ScaleOut) -> None:
    import ray
    from ray import serve

    try:
        serve.delete(APP)
    except Exception:  # noqa: BLE001 - the cluster may be gone already
        log.debug("the application was not deleted", exc_info=True)
    if not cfg.ray_address:
        serve.shutdown()
    ray.shutdown()


def serve_cluster(settings: ServerSettings, cfg: ScaleOut) -> None:
    """`promptcache serve --replicas N`: deploy, serve HTTP here until interrupted, tear down."""
    import uvicorn

    from promptcache.server.http_protocol import uvicorn_options

    start_ray(cfg)
    try:
        handle = deploy(settings, cfg)
        app = ingress_app(settings, cfg, handle)
        log.info("%d replicas behind the %s router; ingress on %s:%d", cfg.replicas, cfg.router,
                 settings.host, settings.port)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None,
                    timeout_graceful_shutdown=5, **uvicorn_options(settings.http_limits()))
    finally:
        shutdown(cfg)


def check_ray() -> None:
    """Raise a ValueError (one line at the CLI) when the `ray` extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        raise ValueError("--replicas needs Ray Serve: pip install 'promptcache[ray]'")
