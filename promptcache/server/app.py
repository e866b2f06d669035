"""The FastAPI app: `create_app(engine, settings)` wires routes, auth, errors and metrics.

The app owns the engine loop's lifetime through its lifespan: the stepping thread starts
when the server starts and is stopped (aborting whatever is in flight) when it shuts down,
so an app that is never served never starts a thread.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import Response

from promptcache.server import admin, completions
from promptcache.server.chat import ChatRenderer
from promptcache.server.engine_loop import EngineLoop
from promptcache.server.errors import install_error_handlers
from promptcache.server.metrics import CONTENT_TYPE, RequestCounter, ServerMetrics
from promptcache.server.openai_schema import ModelCard, ModelList
from promptcache.server.settings import ServerSettings
from promptcache.server.state import ServerState

log = logging.getLogger("promptcache.server")


def engine_from_settings(settings: ServerSettings):
    """Load the model and build the engine the settings describe (seconds for a real model)."""
    from promptcache.engine.engine import Engine

    return Engine.from_model(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        quantize=settings.quantize,
        cache_config=settings.cache_config(),
        max_batch_size=settings.max_batch_size,
        prefill_chunk=settings.prefill_chunk,
        progress=False,
    )


def create_app(engine, settings: ServerSettings | None = None) -> FastAPI:
    """An OpenAI-compatible app serving `engine`. The engine must not be stepped by anyone
    else while the app runs: the app's loop thread is its only stepper."""
    settings = settings or ServerSettings()
    metrics = ServerMetrics(engine)
    state = ServerState(
        engine=engine,
        loop=EngineLoop(engine, max_queue=settings.max_queue),
        settings=settings,
        keys=settings.key_ring(),
        renderer=ChatRenderer(engine.tokenizer),
        metrics=metrics,
    )
    started_at = int(state.wall_clock())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loop.start()
        log.info(
            "serving %s (context %d) with %d API key(s), prefix cache %s",
            engine.model_name,
            engine.context_length,
            len(settings.api_keys),
            "on" if settings.cache_enabled else "off",
        )
        try:
            yield
        finally:
            state.loop.stop()

    app = FastAPI(title="promptcache", version="0.1.0", lifespan=lifespan)
    app.state.promptcache = state
    install_error_handlers(app)
    app.add_middleware(RequestCounter, metrics=metrics)
    app.include_router(completions.router)
    app.include_router(admin.router)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": engine.model_name}

    @app.get("/v1/models", response_model=ModelList)
    async def models(http: HTTPRequest) -> ModelList:
        completions.tenant_of(http, http.headers.get("authorization"))
        card = ModelCard(id=engine.model_name, created=started_at, context_length=engine.context_length)
        return ModelList(data=[card])

    @app.get("/metrics")
    def prometheus_metrics() -> Response:  # sync: scraping takes the engine lock
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
