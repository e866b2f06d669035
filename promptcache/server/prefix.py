"""The token prefix a pin, a session or a cached content names: chat messages rendered without
the assistant header (so every conversation that starts with them hits) or a completion prompt.

One function for every caller that retains a prefix, so limits, rendering off the event loop
and the empty-prefix 400 are the same whichever endpoint names it."""

from __future__ import annotations

from promptcache.server.chat import prompt_from_completion
from promptcache.server.core.deps import off_loop
from promptcache.server.core.fields import check_token_ids
from promptcache.server.errors import bad_request
from promptcache.server.limits import check_messages
from promptcache.server.state import ServerState


async def prefix_tokens(state: ServerState, messages, prompt, what: str) -> list[int]:
    """Tokens of `messages` (rendered as a conversation's start) or of `prompt`; a 400 naming
    `prompt` when they are empty or hold an id outside the vocabulary. Message limits are
    checked before rendering, ids before anything uses them."""
    check_messages(messages, state.settings.limits)
    if messages is not None:
        tokens = await off_loop(state, state.renderer.render_prefix, messages)
    else:
        tokens = await off_loop(state, prompt_from_completion, state.engine.tokenizer, prompt, state.renderer.max_chars)
    if not tokens:
        raise bad_request(f"{what} is empty", param="prompt")
    return check_token_ids(tokens, state.engine.tokenizer.vocab_size)
