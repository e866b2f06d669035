"""POST /v1/cache/explain: what of a request is cached now, and why the rest is not, for a body
of any dialect, without running the model.

The body is rendered exactly as its own endpoint would render it (same template, same tokens)
and looked up in the caller's own namespace (tenant from the key, salt and end user from the
body): other tenants' entries are never consulted. The answer names the first token the cache
does not hold, the message and character it falls in and the text on both sides, and a cause
where the server can tell one. The cache holds whole blocks: `cached_tokens` ends at a block
boundary, and the divergence token is found inside the next block by comparing it with the
cached continuations of the prefix (the trie's children), so it is exact to the token.

The dialect is the `dialect` query parameter (chat, completions, messages, responses), or is
inferred: `input` is a Responses body, `prompt` a completion, `messages` with a top-level
`system` or any `cache_control` an Anthropic one, other `messages` OpenAI chat; a `prompt`
object (a registered prompt, docs/prompts.md) is Responses without `messages`, chat with them.
"""

from __future__ import annotations

import itertools
import json
import re
from array import array
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from promptcache.engine.api import CacheOptions
from promptcache.server.anthropic import translate as anthropic
from promptcache.server.anthropic.schema import CountTokensRequest
from promptcache.server.chat import ChatPrompt, prompt_from_completion
from promptcache.server.core.deps import check_model, off_loop, server_state, tenant_of
from promptcache.server.core.spec import CacheSpec, cache_options
from promptcache.server.core.usage import reusable_prefix
from promptcache.server.errors import bad_request, param_path
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
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}(:\d{2})?|\b1[6-9]\d{8}\b")


@dataclass
class Rendered:
    tokens: list[int]
    cache: CacheSpec
    prompt: ChatPrompt | None = None  # chat dialects: the render, to place the divergence
    turns: list | None = None


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
        _, turns, template_tools = plan_chat(renderer, body)
        turns = (await prompt_turns(state, tenant, body.prompt))[0] + list(turns)  # a registered prompt first
        prompt = await off_loop(state, renderer.render, turns, template_tools)
        return Rendered(prompt.tokens, openai.cache_spec(body), prompt, turns)
    if dialect == "completions":
        body = _parse(CompletionRequest, raw)
        check_sampling(body, limits)
        tokens = await off_loop(state, prompt_from_completion, state.engine.tokenizer, body.prompt)
        return Rendered(tokens, openai.cache_spec(body))
    if dialect == "messages":
        body = _parse(CountTokensRequest, raw)
        check_messages(body.messages, limits)
        prompt, _, _, turns = await off_loop(state, anthropic.render_with_plan, body, renderer)
        return Rendered(prompt.tokens, CacheSpec(), prompt, turns)
    body = _parse(ResponsesRequest, raw)
    previous = None
    if body.previous_response_id is not None:
        previous = await _stored(state, tenant, body.previous_response_id, "previous_response_id")
    plan = responses_tools.tool_plan(body, renderer)
    lead, _ = await prompt_turns(state, tenant, body.prompt)  # a registered prompt first
    turns = lead + responses.turns(body, responses.history(body, previous), plan)
    check_messages(turns, limits)
    prompt = await off_loop(state, renderer.render, turns, plan.template_tools)
    return Rendered(prompt.tokens, responses.cache_spec(body), prompt, turns)


def _peek(state: ServerState, tokens: list[int], options: CacheOptions) -> int:
    """Tokens of `tokens` whose blocks the cache holds now, in the caller's namespace. A read
    of the index that holds and touches nothing, like the scheduler's own peeks."""
    prefix = state.engine.prefix
    return prefix.peek(tokens, options) if prefix is not None else 0


@dataclass
class Edge:
    """What lies past the cached prefix in the trie: how many tokens of the prompt's next
    block the most similar cached continuation shares, and whether the next block is held
    but expired."""

    shared: int = 0
    expired: bool = False


MAX_SIBLINGS = 4096  # continuations compared at most (a popular system prompt has many)


def _edge(state: ServerState, tokens: list[int], options: CacheOptions, held: int) -> Edge:
    """Reads the cache's trie under the engine's lock (the stepping thread changes it only
    while holding that lock), so the children compared are a consistent set."""
    engine, size = state.engine, state.settings.block_size
    prefix = engine.prefix
    if prefix is None:
        return Edge()
    cache, namespace = prefix.cache, prefix.namespace(options)
    want = tokens[held:held + size]
    with engine._lock:
        root = cache._trie.root(namespace.root_key(), namespace.tenant, create=False)
        if root is None:
            return Edge()
        keys = cache.keys(tokens, namespace)
        path = cache._trie.walk(root, keys, len(tokens) // size)
        node = path[held // size - 1] if held else root
        expired = len(path) > held // size
        shared = 0
        for child in itertools.islice(node.children.values(), MAX_SIBLINGS):
            got = array("I", child.tokens)
            n = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            shared = max(shared, n)
    return Edge(shared, expired)


def _cause(state: ServerState, r: Rendered, options: CacheOptions, held: int, around: str, role: str | None,
           message: int | None, edge: Edge) -> str | None:
    """The first cause that applies, most specific first; None when the prompt is cached."""
    size = state.settings.block_size
    if not state.settings.cache_enabled or not options.enabled:
        return "the cache is off for this request"
    if len(r.tokens) < size:
        return f"the prompt is below one block ({len(r.tokens)} tokens; blocks are {size})"
    if held >= len(r.tokens) // size * size:
        return None
    if options.salt is not None and _peek(state, r.tokens, CacheOptions(tenant=options.tenant)) > held:
        return "another salt: more of this prompt is cached without this cache_salt / user"
    if edge.expired:
        return "expired: the next block was cached, and its time-to-live has passed"
    if r.prompt is not None:  # a reply re-rendered otherwise than it was generated
        first = message or 0
        for i, turn in enumerate(r.turns[first:], first):
            text = turn.text()
            if turn.role == "assistant" and "</think>" in text and text not in r.prompt.text:
                return (f"the chat template drops earlier reasoning (<think>...</think>) from message {i}, so it "
                        "renders differently from when it was generated")
    if role == "system" and TIMESTAMP.search(around):
        return "a timestamp-like value in the system prompt: it changes with every request"
    if held == 0:
        return "nothing of this prompt is cached in your namespace (never sent, evicted or expired)"
    return "the prompt differs here from every cached continuation of its prefix"


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
    held = await run_in_threadpool(_peek, state, r.tokens, options) if options.enabled else 0
    decode = state.engine.tokenizer.decode
    divergence, role, edge = None, None, Edge()
    if held < len(r.tokens):
        if options.enabled and state.settings.cache_enabled:
            edge = await run_in_threadpool(_edge, state, r.tokens, options, held)
        at = held + edge.shared  # the first token no cached continuation has
        before, after = decode(r.tokens[max(0, at - CONTEXT_TOKENS):at]), decode(r.tokens[at:at + CONTEXT_TOKENS])
        char = len(decode(r.tokens[:at]))
        message = state.renderer.message_at(r.prompt.text, r.turns, char) if r.prompt is not None else None
        role = r.prompt.roles[at] if r.prompt is not None and at < len(r.prompt.roles) else None
        divergence = {"token": at, "message": message, "role": role, "char": char, "before": before,
                      "after": after}
    return {
        "dialect": dialect, "prompt_tokens": len(r.tokens), "cached_tokens": held,
        "would_read": min(held, reusable_prefix(len(r.tokens), state.settings.block_size)),
        "tiers": {"memory": held, "disk": 0, "redis": 0}, "block_size": state.settings.block_size,
        "divergence": divergence,
        "cause": _cause(state, r, options, held, (divergence["before"] + divergence["after"]) if divergence else "",
                        role, divergence["message"] if divergence else None, edge),
    }
