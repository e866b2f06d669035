"""Route dependencies every dialect shares: the server state, the authenticated caller and its
tenant, bounded worker threads for prompt work, and the model's served names and check.

The caller was identified from the request's headers by `guard.py` before the body was read;
each dialect names its own key header (OpenAI's `Authorization: Bearer`, Anthropic's
`x-api-key`), and both map onto the same key ring, so one key is one tenant in every dialect.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import Request as HTTPRequest

from promptcache.server.errors import model_not_found, unauthorized
from promptcache.server.guard import CALLER
from promptcache.server.state import ServerState
from promptcache.server.tenants import Caller, Tenant


def server_state(http: HTTPRequest) -> ServerState:
    return http.app.state.promptcache


def caller_of(http: HTTPRequest) -> Caller:
    """The caller the guard authenticated from the headers (before the body was read)."""
    caller = http.scope.get(CALLER)
    if caller is None:  # only on public paths, which never ask
        raise unauthorized()
    return caller


def tenant_of(http: HTTPRequest) -> Tenant:
    """The caller's tenant; the admin and metrics keys are nobody's tenant (401)."""
    caller = caller_of(http)
    if caller.tenant is None:
        raise unauthorized("This key cannot make requests; use a tenant's API key.")
    return caller.tenant


async def off_loop(state: ServerState, fn, *args):
    """Run CPU-bound prompt work (render, tokenize) in a worker thread, bounded."""
    return await to_thread.run_sync(fn, *args, limiter=state.render_limiter)


def served_names(state: ServerState) -> tuple[str, ...]:
    """The names a request may give the model (--served-model-name), or its own name."""
    return state.settings.served_model_names or (state.engine.model_name,)


def served_name(state: ServerState) -> str:
    """The name replies give the model: the first served name."""
    return served_names(state)[0]


def check_model(state: ServerState, model: str) -> None:
    if model not in served_names(state):
        raise model_not_found(model)
