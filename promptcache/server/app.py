"""The FastAPI app: `create_app(engine, settings)` wires routes, auth, errors and metrics.

The app owns the engine loop's lifetime through its lifespan: the stepping thread starts
when the server starts and is stopped (aborting whatever is in flight) when it shuts down,
so an app that is never served never starts a thread.

Middleware, outermost first: request ids, request counting, CORS (only with
--allowed-origin), the header guard (Host, Origin, content type, API key), the body size
limit, the x-ignored-fields header. Everything that can refuse a request from its headers does
so before its body is read.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import Response
from starlette.middleware.cors import CORSMiddleware

from promptcache.server import admin, models, tokenize
from promptcache.server.anthropic.routes import router as anthropic_router
from promptcache.server.core.ignored import IgnoredFieldsHeader
from promptcache.server.body_limit import BodyLimit
from promptcache.server.chat import ChatRenderer
from promptcache.server.engine_loop import EngineLoop
from promptcache.server.errors import install_error_handlers, unauthorized
from promptcache.server.guard import CALLER, RequestGuard
from promptcache.server.hit_sources import HitSources
from promptcache.server.metrics import CONTENT_TYPE, RequestCounter, ServerMetrics
from promptcache.server.explain import router as explain_router
from promptcache.server.context.routes import router as context_router
from promptcache.server.retention import start_restore
from promptcache.server.gemini.cached import router as gemini_cached_router
from promptcache.server.gemini.generate import router as gemini_router
from promptcache.server.gemini.count import router as gemini_count_router
from promptcache.server.gemini.models import router as gemini_models_router
from promptcache.server.gemini.stable import router as gemini_v1_router
from promptcache.server.openai.responses.routes import router as responses_router
from promptcache.server.openai.responses.store import response_store
from promptcache.server.openai.routes import router as openai_router
from promptcache.server.prompts.backends import open_store
from promptcache.server.prompts.routes import router as prompts_router
from promptcache.server.prompts.warm import warm_all
from promptcache.server.prompt_size import max_prompt_chars
from promptcache.server.request_id import RequestIds
from promptcache.server.settings import ServerSettings
from promptcache.server.state import PromptCacheKeyStats, ServerState

log = logging.getLogger("promptcache.server")


def engine_from_settings(settings: ServerSettings):
    """Load the model and build the engine the settings describe (seconds for a real model)."""
    from promptcache.engine.engine import Engine

    return Engine.from_model(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        quantize=settings.quantize,
        deterministic=settings.deterministic,
        decode_threads=settings.decode_threads,
        share_kv_across_numerics=settings.share_kv_across_numerics,
        cache_config=settings.cache_config(),
        max_batch_size=settings.max_batch_size,
        prefill_chunk=settings.prefill_chunk,
        progress=False,
    )


def create_app(engine, settings: ServerSettings | None = None, *, loop: EngineLoop | None = None) -> FastAPI:
    """An OpenAI-compatible app serving `engine`. The engine must not be stepped by anyone
    else while the app runs: the app's loop thread is its only stepper. `loop`: another
    loop with EngineLoop's interface (the scale-out ingress sends requests to replicas)."""
    settings = settings or ServerSettings()
    keys = settings.key_ring()
    # The plaintext keys are dropped: the running server keeps only the key ring's digests.
    settings = settings.without_secrets()
    metrics = ServerMetrics(engine)
    state = ServerState(
        engine=engine,
        loop=loop or EngineLoop(engine, max_queue=settings.max_queue,
                                max_per_tenant=settings.tenant_request_limit(open_server=keys.open)),
        settings=settings,
        keys=keys,
        renderer=ChatRenderer(engine.tokenizer, max_chars=max_prompt_chars(engine)),
        metrics=metrics,
        key_stats=PromptCacheKeyStats(settings.limits.max_keys_per_tenant),
        render_limiter=anyio.CapacityLimiter(settings.render_threads),
        responses=response_store(settings),
        prompts=open_store(settings.prompt_store, redis_url=settings.redis_url, tier_key=settings.tier_key),
        hit_sources=HitSources(metrics.registry),
    )
    started_at = int(state.wall_clock())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loop.start()
        # Sessions, cached contents and pins pinned again in the background: the first requests
        # are served meanwhile (1,100 pins once held start-up for 95 s).
        restoring = start_restore(state) if settings.restore_retained else None
        if settings.warm_prompts:  # a deploy starts hot: every warm prompt pinned before serving
            await warm_all(state)
        log.info(
            "serving %s (context %d) with %r, prefix cache %s",
            engine.model_name,
            engine.context_length,
            keys,
            "on" if settings.cache_enabled else "off",
        )
        try:
            yield
        finally:
            if restoring is not None:
                restoring.cancel()
            state.loop.stop()

    app = FastAPI(title="promptcache", version="0.1.0", lifespan=lifespan)
    app.state.promptcache = state
    setattr(app.state, models.STARTED_AT, started_at)
    install_error_handlers(app)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(IgnoredFieldsHeader)  # innermost: it reads what the route left in the scope
    if settings.request_log:  # inside the body limit: sees only bodies within it
        from promptcache.server.request_log import RequestLog

        app.add_middleware(RequestLog, path=settings.request_log, bodies=settings.request_log_bodies,
                           max_bytes=int(settings.request_log_max_mb * 2**20), backups=settings.request_log_backups)
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(
        RequestGuard, keys=keys, bind_host=settings.host, allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins, metrics_public=settings.metrics_public,
    )
    if settings.allowed_origins:  # answers the preflights of the origins allowed above
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "x-api-key", "x-goog-api-key", "anthropic-version", "content-type",
                           "x-session-id", "x-session-ttl"],
            expose_headers=["x-request-id", "x-cache-hit-tokens", "x-cache-tiers", "x-cache-divergence",
                            "x-session-id", "x-ignored-fields"],
        )
    app.add_middleware(RequestCounter, metrics=metrics)
    app.add_middleware(RequestIds)
    for dialect in (openai_router, responses_router, anthropic_router):  # each dialect is one router
        app.include_router(dialect)
    app.include_router(admin.router)
    app.include_router(models.router)  # /v1/models, /v1/models/{model}
    app.include_router(context_router)  # /v1/context sessions
    app.include_router(gemini_router)  # /v1beta/models/{model}:generateContent
    app.include_router(gemini_cached_router)  # /v1beta/cachedContents
    app.include_router(gemini_count_router)  # /v1beta/models/{model}:countTokens
    app.include_router(gemini_models_router)  # /v1beta/models, /v1beta/models/{model}
    app.include_router(gemini_v1_router)  # Gemini's v1 paths, google-genai's default
    app.include_router(prompts_router)  # /v1/prompts, the prompt registry
    app.include_router(explain_router)  # /v1/cache/explain, for a body of any dialect
    app.include_router(tokenize.router)  # /tokenize, /detokenize, /tokenizer_info

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": engine.model_name}

    @app.get("/metrics")
    def prometheus_metrics(http: HTTPRequest) -> Response:  # sync: a scrape reads the engine
        caller = http.scope.get(CALLER)  # None: --metrics-public made the path public
        if caller is not None and not (caller.metrics or caller.admin):
            raise unauthorized("/metrics needs the admin key or the metrics key (or --metrics-public).")
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
