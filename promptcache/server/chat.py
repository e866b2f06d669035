"""Chat messages -> prompt token ids, plus the role of every prompt token.

The prompt is the model's chat template rendered over the whole conversation with the
assistant header appended, tokenized once. That full render is the only thing the model sees.

The per-token roles are for the cache's role-tiered eviction (assistant turns are evicted
before user turns, user before system), and are best-effort: the conversation is re-rendered
over growing prefixes of the message list, and the tokens each message adds are given its
role. Templates are free to make a message's rendering depend on what follows it, and BPE
merges can straddle a boundary, so the boundaries are clipped to stay monotonic and within
the prompt; a misplaced boundary only moves one block between eviction tiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from promptcache.engine.api import Role
from promptcache.server.errors import bad_request
from promptcache.server.openai_schema import ChatMessage

# OpenAI's "developer" role is the newer name for "system"; chat templates of open models know
# only "system", so the message is rendered (and cached) as one.
_ROLE_FOR_TEMPLATE: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class ChatTokenizer(Protocol):
    bos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, tools: Any = None
    ) -> str: ...


@dataclass(frozen=True)
class ChatPrompt:
    tokens: list[int]
    roles: list[Role]  # one per token
    text: str  # the rendered prompt; only ever logged with --log-prompts


def template_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The dicts a Jinja chat template expects: role and string content only."""
    return [{"role": _ROLE_FOR_TEMPLATE[m.role], "content": m.text()} for m in messages]


class ChatRenderer:
    """Renders and tokenizes conversations for one tokenizer.

    Whether the template itself writes the BOS token is decided once, from a probe render:
    if it does, encoding must not add a second one (a doubled BOS silently changes the
    model's output and splits the cache between clients that do and don't send it).
    """

    def __init__(self, tokenizer: ChatTokenizer):
        self.tokenizer = tokenizer
        bos_id = getattr(tokenizer, "bos_token_id", None)
        self._bos_text = tokenizer.decode([bos_id]) if bos_id is not None else ""

    def _encode_rendered(self, text: str) -> list[int]:
        template_has_bos = bool(self._bos_text) and text.startswith(self._bos_text)
        return self.tokenizer.encode(text, add_special_tokens=not template_has_bos)

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool, tools: Any) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=generation_prompt, tools=tools
            )
        except Exception as exc:  # a template raising on odd input is the client's input error
            raise bad_request(f"The messages could not be rendered: {exc}", param="messages") from exc

    def render(self, messages: Sequence[ChatMessage], tools: Any = None) -> ChatPrompt:
        """The prompt for `messages`, ending in the assistant header."""
        dicts = template_messages(messages)
        text = self._render(dicts, True, tools)
        tokens = self._encode_rendered(text)
        roles = self._roles(dicts, len(tokens), tools)
        return ChatPrompt(tokens=tokens, roles=roles, text=text)

    def render_prefix(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The tokens of `messages` as the start of a longer conversation (no assistant
        header): what a pin must cover so that later conversations extending it hit."""
        return self._encode_rendered(self._render(template_messages(messages), False, None))

    def _roles(self, dicts: list[dict[str, Any]], total: int, tools: Any) -> list[Role]:
        roles: list[Role] = []
        for end in range(1, len(dicts) + 1):
            boundary = len(self._encode_rendered(self._render(dicts[:end], False, tools)))
            boundary = min(max(boundary, len(roles)), total)
            roles.extend([dicts[end - 1]["role"]] * (boundary - len(roles)))
        # What follows the last message is the assistant header of the turn being generated.
        roles.extend(["assistant"] * (total - len(roles)))
        return roles


def prompt_from_completion(tokenizer: ChatTokenizer, prompt: Any) -> list[int]:
    """A /v1/completions prompt (string, [string], token ids or [token ids]) as token ids."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, add_special_tokens=True)
    return list(prompt)
