"""A `prompt` reference on a generation request -> the system turn that leads its prompt.

Chat completions (`prompt` in the body, `extra_body` in the official client) and Responses
(`prompt`, as in OpenAI's API) both put the rendered template first, as its own system turn,
before `instructions` and the messages: a warm prompt's prefix is then the prompt's first
tokens. The reference is checked against its limits before the store is asked, and the
template is rendered before the chat template runs.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from promptcache.server.chat import Turn
from promptcache.server.errors import APIError, bad_request
from promptcache.server.prompts.schema import LIMITS, PromptReference, version_number
from promptcache.server.prompts.store import PromptVersion
from promptcache.server.prompts.template import Template, TemplateError
from promptcache.server.state import ServerState
from promptcache.tiers.store import StoreUnavailable


def prompt_not_found(prompt_id: str, version: int | None = None, param: str = "prompt.id") -> APIError:
    what = f"version {version} of prompt" if version is not None else "prompt"
    return APIError(404, f"No {what} found with id '{prompt_id[:LIMITS.max_id_chars]}'.", param=param,
                    code="not_found")


async def store_call(state: ServerState, fn, *args):
    """A registry call in a worker thread; a store that cannot be reached is a 503."""
    try:
        return await run_in_threadpool(fn, *args)
    except StoreUnavailable:
        raise APIError(503, "The prompt store is unavailable; try again shortly.", code="store_unavailable",
                       type="server_error") from None


def check_id(prompt_id: str, param: str) -> None:
    if len(prompt_id) > LIMITS.max_id_chars:
        raise bad_request(f"'{param}' is {len(prompt_id)} characters long; prompt ids are at most "
                          f"{LIMITS.max_id_chars}.", param=param)


async def resolve(state: ServerState, tenant: str, ref: PromptReference) -> tuple[PromptVersion, str]:
    """The version a reference names (its prompt's default when it names none) and the
    template rendered with the reference's variables."""
    check_id(ref.id, "prompt.id")
    values = ref.values()
    if len(values) > LIMITS.max_variables:
        raise bad_request(f"{len(values)} variables is more than the limit of {LIMITS.max_variables}.",
                          param="prompt.variables")
    number = version_number(ref.version, "prompt.version")
    version = await store_call(state, state.prompts.version, tenant, ref.id, number)
    if version is None:
        raise prompt_not_found(ref.id, number)
    # No rendering longer than the longest prompt that could fit the context (or, where the
    # tokenizer gives no such bound, than a request body) is built.
    limit = state.renderer.max_chars or state.settings.limits.max_body_bytes
    try:
        return version, Template(version.template).render(values, max_chars=limit)
    except TemplateError as exc:
        raise bad_request(str(exc), param=exc.param) from None


async def prompt_turns(state: ServerState, tenant: str, ref: PromptReference | None) -> tuple[list[Turn], dict | None]:
    """([the leading system turn], the reference as a response echoes it) or ([], None)."""
    if ref is None:
        return [], None
    version, text = await resolve(state, tenant, ref)
    echo = {"id": ref.id, "version": str(version.version), "variables": ref.variables and ref.values()}
    return [Turn("system", text)], echo
