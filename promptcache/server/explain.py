"""POST /v1/cache/explain: what of a request is cached now, and why the rest is not, for a body
of any dialect, without running the model.

The body is rendered exactly as its own endpoint would render it (same template, same tokens)
and looked up in the caller's own namespace (tenant from the key, salt and end user from the
body): other tenants' entries are never consulted. The answer names the first token the cache
does not hold, the message and character it falls in and the text on both sides, and a cause
where the server can tell one (explain_causes.py). The cache holds whole blocks: `cached_tokens`
ends at a block boundary, and the divergence token is found inside the next block by comparing
it with the cached continuations of the prefix (the trie's children), so it is exact to the
token. That read is the engine's own public, locked query (`Engine.explain_prefix`), which also
consults its bounded record of recent evictions.

The dialect is the `dialect` query parameter (chat, completions, messages, responses), or is
inferred: `input` is a Responses body, `prompt` a completion, `messages` with a top-level
`system` or any `cache_control` an Anthropic one, other `messages` OpenAI chat; a `prompt`
object (a registered prompt, docs/prompts.md) is Responses without `messages`, chat with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from promptcache.cache.divergence import Divergence
from promptcache.engine.api import CacheOptions
from promptcache.server.anthropic import translate as anthropic
from promptcache.server.anthropic.schema import CountTokensRequest
from promptcache.server.chat import ChatPrompt, prompt_from_completion
from promptcache.server.core.deps import check_model, off_loop, server_state, tenant_of
from promptcache.server.core.fields import check_token_ids
from promptcache.server.core.spec import CacheSpec, cache_options
from promptcache.server.core.usage import reusable_prefix
from promptcache.server.errors import bad_request, param_path
from promptcache.server.explain_causes import Miss, cause, unpack
from promptcache.server.limits import check_chat, check_messages, check_sampling
from promptcache.server.openai import translate as openai
from promptcache.server.openai.responses import tools as responses_tools
from promptcache.server.openai.responses import translate as responses
from promptcache.server.openai.responses.routes import _stored
from promptcache.server.openai.responses.schema import ResponsesRequest
from promptcache.server.openai.schema import ChatCompletionRequest, CompletionRequest
from promptcache.server.prompts.use import prompt_turns
from promptcache.server.state import ServerState
from promptcache.server.structured.openai_chat import plan_chat
from promptcache.server.tenants import Tenant

router = APIRouter(prefix="/v1/cache")
Dialect = Literal["chat", "completions", "messages", "responses"]
CONTEXT_TOKENS = 16  # tokens of text shown on each side of the divergence


@dataclass
class Rendered:
    tokens: list[int]
    cache: CacheSpec
    prompt: ChatPrompt | None = None  # chat dialects: the render, to place the divergence
    turns: list | None = None
    tool_names: list[str] = field(default_factory=list)  # in the request's order


def infer_dialect(raw: dict) -> Dialect:
    if "input" in raw or (isinstance(raw.get("prompt"), dict) and "messages" not in raw):  # or a registered prompt
        return "responses"
    if "prompt" in raw and not isinstance(raw["prompt"], dict):
        return "completions"
    if "system" in raw or "cache_control" in json.dumps(raw.get("messages", [])) or "cache_control" in raw:
        return "messages"
    return "chat"


def _parse(model, raw: dict):
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        param = param_path(("body", *first.get("loc", ())))
        raise bad_request(f"Invalid value for '{param}': {first.get('msg')}.", param=param) from None


async def render(state: ServerState, tenant: str, dialect: Dialect, raw: dict) -> Rendered:
    """The body's prompt, as its own endpoint renders it, after the same limits."""
    renderer, limits = state.renderer, state.settings.limits
    if dialect == "chat":
        body = _parse(ChatCompletionRequest, raw)
        check_chat(body, limits)
        plan, turns, template_tools = plan_chat(renderer, body)
        turns = (await prompt_turns(state, tenant, body.prompt))[0] + list(turns)  # a registered prompt first
        prompt = await off_loop(state, renderer.render, turns, template_tools)
        return Rendered(prompt.tokens, openai.cache_spec(body), prompt, turns, [t.name for t in plan.tools])
    if dialect == "completions":
        body = _parse(CompletionRequest, raw)
        check_sampling(body, limits)
        tokens = await off_loop(state, prompt_from_completion, state.engine.tokenizer, body.prompt,
                                state.renderer.max_chars)
        return Rendered(check_token_ids(tokens, state.engine.tokenizer.vocab_size), openai.cache_spec(body))
    if dialect == "messages":
        body = _parse(CountTokensRequest, raw)
        check_messages(body.messages, limits)
        prompt, _, plan, turns = await off_loop(state, anthropic.render_with_plan, body, renderer)
        return Rendered(prompt.tokens, CacheSpec(), prompt, turns, [t.name for t in plan.tools])
    body = _parse(ResponsesRequest, raw)
    previous = None
    if body.previous_response_id is not None:
        previous = await _stored(state, tenant, body.previous_response_id, "previous_response_id")
    plan = responses_tools.tool_plan(body, renderer)
    lead, _ = await prompt_turns(state, tenant, body.prompt)  # a registered prompt first
    turns = lead + responses.turns(body, responses.history(body, previous), plan)
    check_messages(turns, limits)
    prompt = await off_loop(state, renderer.render, turns, plan.template_tools)
    return Rendered(prompt.tokens, responses.cache_spec(body), prompt, turns, [t.name for t in plan.tools])


def _held(state: ServerState, tokens: list[int], options: CacheOptions) -> tuple[int, Divergence]:
    """The engine's locked read: tokens cached in the caller's namespace, and past them how the
    prompt continues (against cached continuations, expiry and the eviction record)."""
    held, edge = state.engine.explain_prefix(tokens, options)
    return held, edge or Divergence()


def _lower(state: ServerState, tokens: list[int], options: CacheOptions, held: int) -> dict[str, int]:
    """Tokens past memory's prefix that the disk or Redis tiers hold (I/O: a worker thread)."""
    return state.engine.explain_tiers(tokens, options, held)


@router.post("/explain")
async def explain(http: HTTPRequest, dialect: Dialect | None = None, tenant: Tenant = Depends(tenant_of)) -> dict:
    state = server_state(http)
    try:
        raw = await http.json()
    except ValueError:
        raise bad_request("We could not parse the JSON body of your request.") from None
    if not isinstance(raw, dict):
        raise bad_request("The body must be a JSON object: a request body of any dialect.")
    dialect = dialect or infer_dialect(raw)
    check_model(state, raw.get("model") if isinstance(raw.get("model"), str) else "")
    r = await render(state, tenant.name, dialect, raw)
    options = cache_options(r.cache, tenant.name, state.settings.isolate_by)
    enabled = options.enabled and state.settings.cache_enabled
    held, edge = await run_in_threadpool(_held, state, r.tokens, options) if enabled else (0, Divergence())
    size, decode = state.settings.block_size, state.engine.tokenizer.decode
    miss = Miss(len(r.tokens), held, size, enabled, edge=edge, turns=r.turns, tool_names=r.tool_names,
                rendered_text=r.prompt.text if r.prompt is not None else None)
    if enabled and options.salt is not None:
        miss.salted_held = (await run_in_threadpool(_held, state, r.tokens, CacheOptions(tenant=options.tenant)))[0]
    lower = await run_in_threadpool(_lower, state, r.tokens, options, held) if enabled else {}
    miss.lower = lower
    divergence = None
    if held < len(r.tokens):
        at = held + edge.shared  # the first token no cached continuation has
        before, after = decode(r.tokens[max(0, at - CONTEXT_TOKENS):at]), decode(r.tokens[at:at + CONTEXT_TOKENS])
        char = len(decode(r.tokens[:at]))
        message = state.renderer.message_at(r.prompt.text, r.turns, char) if r.prompt is not None else None
        role = r.prompt.roles[at] if r.prompt is not None and at < len(r.prompt.roles) else None
        divergence = {"token": at, "message": message, "role": role, "char": char, "before": before,
                      "after": after}
        miss.role, miss.around, miss.message = role, before + after, message
        start = held + max(0, edge.shared - 2)  # from just before the divergence, in both
        miss.ours_block = decode(r.tokens[start:held + size + 8])
        miss.theirs_block = decode(unpack(edge.theirs)[max(0, edge.shared - 2):])
    answer = {
        "dialect": dialect, "prompt_tokens": len(r.tokens), "cached_tokens": held,
        "would_read": min(held, reusable_prefix(len(r.tokens), size)),
        "tiers": {"memory": held, "disk": 0, "redis": 0, **lower}, "block_size": size,
        "divergence": divergence, "cause": cause(miss),
    }
    explained_by = getattr(state.engine, "explained_by", None)  # scale-out: the replica that was asked
    if explained_by is not None and enabled:
        answer["replica"] = explained_by(r.tokens, options)
    return answer
