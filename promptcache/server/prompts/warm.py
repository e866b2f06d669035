"""Keeping a prompt's static prefix warm: its KV computed once and pinned, so the first real
request that uses the prompt is already a cache hit.

The prefix is what every rendering of the prompt shares: the chat template's opening of the
system turn, then the template text before its first variable. It is found by rendering the
prompt as a request would (a system turn, then another turn) with different probe values and
keeping the tokens all renderings share. Cutting the text at the first variable and tokenizing
that would not do: the tokenizer may merge the last characters before the variable with the
value after it ("Dear " + "Ann" is "Dear", " Ann"), and a prefix whose last token differs
from the request's misses from that block on.

The warm prefix is cached in the tenant's default namespace: requests with a `cache_salt`, or
with --isolate-by user and an end user, do not share it (docs/prompts.md).
"""

from __future__ import annotations

import hashlib
import json
import logging

from starlette.concurrency import run_in_threadpool

from promptcache.server import retention
from promptcache.server.chat import ChatRenderer, Turn
from promptcache.server.errors import APIError
from promptcache.server.prompts.store import PromptVersion
from promptcache.server.prompts.template import Template
from promptcache.server.state import ServerState

log = logging.getLogger("promptcache.server.prompts")

# Values unlike each other in their first character (letter, digit, space, punctuation, line
# break), and next turns of three roles, so that what they share is the prompt's alone.
_PROBES = (("a", "user", "0"), ("7 ", "system", "Z"), ("\n{", "user", " q"), ("É-", "assistant", "\n"))


def prefix_tokens(renderer: ChatRenderer, template: Template) -> list[int]:
    """The tokens every request using `template` starts with (before any of its own)."""
    fill = bool(template.variables)
    renders = []
    for value, role, text in _PROBES:
        try:
            turns = [Turn("system", template.static_prefix + (value if fill else "")), Turn(role, text)]
            renders.append(renderer.render(turns).tokens)
        except APIError:  # a template that refuses this order of roles: the other probes decide
            continue
    if len(renders) < 2:
        return []  # nothing can be said to be shared: nothing is warmed
    shared = 0
    for column in zip(*renders):
        if any(token != column[0] for token in column):
            break
        shared += 1
    return renders[0][:shared]


def owner_of(tenant: str, version: PromptVersion) -> str:
    """Who holds a warm version's pin: the prompt and its static prefix, so that versions
    sharing a prefix share one pin, and the owner is known before the store numbers the
    version."""
    digest = hashlib.sha256(Template(version.template).static_prefix.encode()).hexdigest()[:32]
    return "prompt:" + json.dumps([tenant, version.prompt_id, digest])


async def warm(state: ServerState, tenant: str, version: PromptVersion, http_id: str) -> int:
    """Compute and pin the version's static prefix, admitted against the tenant's pin budget
    before any KV is computed (past it: PinBudgetExceeded, a 409, and nothing is computed);
    returns the tokens now pinned."""
    tokens = await run_in_threadpool(prefix_tokens, state.renderer, Template(version.template))
    if len(tokens) < state.settings.block_size or not state.settings.cache_enabled:
        return 0  # not one whole block: nothing a cache can keep
    kept = await retention.retain(state, tokens, tenant=tenant, salt=None, ttl_s=None,
                                  owner=owner_of(tenant, version), http_id=http_id)
    return kept.cached_tokens


def held(state: ServerState, tenant: str, version: PromptVersion) -> bool:
    """Whether this process already pins the version's prefix (for another version with the
    same static prefix)."""
    return retention.leases(state).get(owner_of(tenant, version)) is not None


async def release(state: ServerState, tenant: str, versions: list[PromptVersion]) -> None:
    """Unpin the warm ones among `versions`: their blocks become ordinary cache entries."""
    for version in versions:
        if version.warm:
            await retention.release(state, owner_of(tenant, version))


async def warm_all(state: ServerState) -> int:
    """--warm-prompts: re-warm every warm version of every tenant at start-up. One that no
    longer fits its tenant's pin budget is logged and skipped; returns how many were warmed."""
    store = state.prompts
    versions = await run_in_threadpool(store.warm_versions)
    warmed = 0
    for tenant, version in versions:
        try:
            await warm(state, tenant, version, "startup")
            warmed += 1
        except Exception as exc:  # one prompt's failure must not stop the others or the start
            log.warning("prompt %s version %d of tenant %s was not re-warmed: %s", version.prompt_id,
                        version.version, json.dumps(tenant), type(exc).__name__)
    log.info("re-warmed %d of %d warm prompt versions", warmed, len(versions))
    return warmed
