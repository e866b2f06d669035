"""POST /v1/messages and POST /v1/messages/count_tokens, in Anthropic's shapes.

Same order of work as every dialect: the key was checked from the headers (`x-api-key`, or
`Authorization: Bearer`), the body's size bounded, then the cheap limits, and only then the
render and tokenization, in a bounded worker thread.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response

from promptcache.engine.api import EngineInputError
from promptcache.server.anthropic.errors import anthropic_error
from promptcache.server.anthropic.reply import content_blocks
from promptcache.server.anthropic.schema import CountTokensRequest, MessageReply, MessagesRequest
from promptcache.server.anthropic.stream import message_events, messages_usage
from promptcache.server.anthropic.translate import cache_spec, render_with_plan, sampling_spec
from promptcache.server.context.sessions import attach as attach_session
from promptcache.server.core.deps import check_model, off_loop, served_name, server_state, tenant_of
from promptcache.server.core.ignored import check_unknown, note_ignored
from promptcache.server.core.spec import GenerationSpec
from promptcache.server.errors import bad_request, register_error_shape
from promptcache.server.generation import respond, start
from promptcache.server.limits import Limits, check_label, check_messages, check_tools
from promptcache.server.request_id import request_id_of
from promptcache.server.structured.compile import compile_structure, ignored_header
from promptcache.server.tenants import Tenant

PREFIX = "/v1/messages"
register_error_shape(PREFIX, anthropic_error)
router = APIRouter()


def _check_limits(body: CountTokensRequest, limits: Limits) -> None:
    check_messages(body.messages, limits)
    if isinstance(body.system, list) and len(body.system) > limits.max_content_parts:
        raise bad_request(f"{len(body.system)} system blocks is more than the limit of "
                          f"{limits.max_content_parts}.", param="system")
    check_tools([t.model_dump() for t in body.tools] if body.tools else None, limits)
    if isinstance(body, MessagesRequest):
        for i, stop in enumerate(body.stop_sequences or []):
            check_label(stop, limits.max_stop_chars, f"stop_sequences.{i}")
        check_label(body.metadata.user_id if body.metadata else None, limits.max_label_chars, "metadata.user_id")


async def _compiled(state, spec):
    """The output constraint compiled; a schema that cannot be is a 400 whose message names the
    field it came from, as Anthropic's error shape has no `param`."""
    try:
        return await compile_structure(state.engine, spec)
    except EngineInputError as err:
        name = err.param or "output_config.format"
        raise bad_request(f"{name}: {err}", param=name) from None


@router.post(PREFIX, response_model=None, responses={200: {"model": MessageReply}})
async def messages(body: MessagesRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> Response:
    check_unknown(http, body, "anthropic")
    state = server_state(http)
    arrived = state.clock()
    check_model(state, body.model)
    _check_limits(body, state.settings.limits)
    prompt, breakpoints, plan, _ = await off_loop(state, render_with_plan, body, state.renderer)
    note_ignored(http, plan.ignored, "anthropic")
    compiled = await _compiled(state, plan.spec)
    http_id = request_id_of(http.scope)
    spec = GenerationSpec(
        endpoint="messages", request_id=f"msg_{http_id.removeprefix('req_')}", tenant=tenant.name,
        tokens=prompt.tokens, roles=prompt.roles, sampling=sampling_spec(body),
        cache=cache_spec(body, breakpoints), prompt_text=prompt.text, structure=compiled,
        headers=ignored_header(compiled),
    )
    spec = await attach_session(state, http, spec)
    gen = start(state, spec, http_id=http_id, arrived=arrived)
    model = served_name(state)

    def reply(text: str) -> MessageReply:
        blocks, reason, sequence = content_blocks(gen, text, plan)
        return MessageReply(id=gen.sub.request_id, model=model, content=blocks, stop_reason=reason,
                            stop_sequence=sequence, usage=messages_usage(gen.usage))

    return await respond(gen, http, message_events(gen, model, plan) if body.stream else None, reply)


@router.post(PREFIX + "/count_tokens")
async def count_tokens(body: CountTokensRequest, http: HTTPRequest, tenant: Tenant = Depends(tenant_of)) -> dict:
    check_unknown(http, body, "anthropic")
    state = server_state(http)
    check_model(state, body.model)
    _check_limits(body, state.settings.limits)
    prompt, _, plan, _ = await off_loop(state, render_with_plan, body, state.renderer)
    note_ignored(http, plan.ignored, "anthropic")
    return {"input_tokens": len(prompt.tokens)}
