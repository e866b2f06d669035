"""Chat messages -> prompt token ids, plus the role of every prompt token.

The prompt is the model's chat template rendered over the whole conversation with the
assistant header appended, tokenized once. That full render is the only thing the model sees.

The per-token roles are for the cache's role-tiered eviction (assistant turns are evicted
before user turns, user before system), and are best-effort. They come from the same single
render: each message's content is found in the rendered text, in order, and its region ends
after its content plus the template's closing text for a turn (learned once from a probe
render). The regions are tokenized separately only to count their tokens, which are clipped
to stay monotonic and within the prompt; a misplaced boundary only moves one block between
eviction tiers.

This used to re-render the conversation over every prefix of the message list, which is
quadratic: 2,000 one-character messages took 26.6 s of CPU before any size check. Now a
request costs one render and two tokenizations of its text (benchmarks/render.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from promptcache.engine.api import Role
from promptcache.server.errors import bad_request
from promptcache.server.prompt_size import check_prompt_chars

# OpenAI's "developer" role is the newer name for "system"; chat templates of open models know
# only "system", so the message is rendered (and cached) as one.
_ROLE_FOR_TEMPLATE: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class ChatTurn(Protocol):
    """One message of any dialect: a role the template knows (or OpenAI's "developer") and its
    text."""

    role: str

    def text(self) -> str: ...


@dataclass(frozen=True)
class Turn:
    """A ChatTurn built by a dialect's translation (Anthropic's blocks, a stored history)."""

    role: str
    content: str

    def text(self) -> str:
        return self.content


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


def template_messages(messages: Sequence[ChatTurn]) -> list[dict[str, Any]]:
    """The dicts a Jinja chat template expects: role and string content only."""
    return [{"role": _ROLE_FOR_TEMPLATE[m.role], "content": m.text()} for m in messages]


_PROBE = "\x00probe\x00"
# A message's content is looked for at most this far past where the previous one ended (a
# header, a default system prompt), so that contents the template rewrote cost no scan of the
# whole text each: the search stays linear in the size of the conversation.
_SEARCH_SLACK = 4096


class ChatRenderer:
    """Renders and tokenizes conversations for one tokenizer.

    Whether the rendered text starts with the BOS token is checked on every render: if the
    template wrote it, encoding must not add a second one (a doubled BOS silently changes the
    model's output and splits the cache between clients that do and don't send it).
    """

    def __init__(self, tokenizer: ChatTokenizer, max_chars: int | None = None):
        self.tokenizer = tokenizer
        self.max_chars = max_chars  # rendered text past it is refused before tokenizing (prompt_size.py)
        bos_id = getattr(tokenizer, "bos_token_id", None)
        self._bos_text = tokenizer.decode([bos_id]) if bos_id is not None else ""
        self._closing = self._probe_closing()

    def _probe_closing(self) -> str:
        """What the template writes after a turn's content ('<|im_end|>\\n' for ChatML), so that
        it is counted with its message as a re-render of the prefix would; '' if unknown."""
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": _PROBE}], add_generation_prompt=False, tools=None
            )
        except Exception:  # a template may refuse a lone user turn; roles are best-effort
            return ""
        at = text.find(_PROBE)
        return text[at + len(_PROBE):] if at >= 0 else ""

    def _special(self, text: str) -> bool:
        """Whether encoding `text` should add BOS: not when the template already wrote it."""
        return not (bool(self._bos_text) and text.startswith(self._bos_text))

    def _encode_rendered(self, text: str) -> list[int]:
        check_prompt_chars(text, self.max_chars, "messages")
        return self.tokenizer.encode(text, add_special_tokens=self._special(text))

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool, tools: Any) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=generation_prompt, tools=tools
            )
        except Exception as exc:  # a template raising on odd input is the client's input error
            raise bad_request(f"The messages could not be rendered: {exc}", param="messages") from exc

    def render(self, messages: Sequence[ChatTurn], tools: Any = None) -> ChatPrompt:
        """The prompt for `messages`, ending in the assistant header: one render, linear in
        the size of the conversation."""
        dicts = template_messages(messages)
        text = self._render(dicts, True, tools)
        tokens = self._encode_rendered(text)
        roles = self._roles(text, dicts, len(tokens))
        return ChatPrompt(tokens=tokens, roles=roles, text=text)

    def render_prefix(self, messages: Sequence[ChatTurn], tools: Any = None) -> list[int]:
        """The tokens of `messages` as the start of a longer conversation (no assistant
        header): what a pin must cover so that later conversations extending it hit, and
        where an explicit cache breakpoint falls."""
        return self._encode_rendered(self._render(template_messages(messages), False, tools))

    @property
    def tool_format(self) -> bool:
        """Whether the model's chat template renders a `tools` list at all; without one, a
        request's tools would be dropped from the prompt in silence."""
        template = getattr(self.tokenizer, "chat_template", None)
        return "tools" in getattr(template, "source", "")

    def require_tool_format(self, param: str, what: str = "tools") -> None:
        """A 400 naming `param` when the template cannot render `what`: a request that needs
        tools is refused rather than answered with its tools silently dropped."""
        if not self.tool_format:
            raise bad_request(f"{param}: this model's chat template has no tool format, so {what} cannot be "
                              "honoured.", param=param)

    def message_at(self, text: str, messages: Sequence[ChatTurn], char: int) -> int | None:
        """The index of the message whose region of the rendered `text` holds offset `char`
        (None: past the last message, in the assistant header)."""
        for i, end in enumerate(self._message_ends(text, template_messages(messages))):
            if char < end:
                return i
        return None

    def _message_ends(self, text: str, dicts: list[dict[str, Any]]) -> list[int]:
        """For each message, the offset in `text` where its region ends (monotonic)."""
        ends: list[int] = []
        pos = 0
        for message in dicts:
            content = message["content"]
            window = pos + len(content) + _SEARCH_SLACK
            at = text.find(content, pos, window) if content else -1
            if at < 0 and content.strip():
                content = content.strip()  # templates often trim
                at = text.find(content, pos, window)
            if at >= 0:
                pos = at + len(content)
                if self._closing and text.startswith(self._closing, pos):
                    pos += len(self._closing)
            ends.append(pos)
        return ends

    def _roles(self, text: str, dicts: list[dict[str, Any]], total: int) -> list[Role]:
        roles: list[Role] = []
        start, count = 0, 0
        for message, end in zip(dicts, self._message_ends(text, dicts)):
            if end > start:
                region = text[start:end]
                count += len(self.tokenizer.encode(region, add_special_tokens=start == 0 and self._special(text)))
                start = end
            boundary = min(max(count, len(roles)), total)
            roles.extend([message["role"]] * (boundary - len(roles)))
        # What follows the last message is the assistant header of the turn being generated.
        roles.extend(["assistant"] * (total - len(roles)))
        return roles


def prompt_from_completion(tokenizer: ChatTokenizer, prompt: Any, max_chars: int | None = None) -> list[int]:
    """A /v1/completions prompt (string, [string], token ids or [token ids]) as token ids; a
    string past `max_chars` is refused before tokenizing (prompt_size.py)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        check_prompt_chars(prompt, max_chars, "prompt")
        return tokenizer.encode(prompt, add_special_tokens=True)
    return list(prompt)
