"""Logged prompts -> token ids and per-token roles, exactly as the server computes them.

Chat-shaped prompts (chat, messages, responses) go through the server's own `ChatRenderer`
(the model's chat template, one render, BOS rule, per-token roles for role-tiered eviction);
completions text through the tokenizer with special tokens, as /v1/completions does. Token ids
are taken as they are. Tokens are memoized piece by piece (tokens.py), checked against the
plain tokenizer as it goes. A prompt the template refuses is one the server would answer with a
400, so it is reported as a bad line.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptcache.analyze.dialects import LoggedPrompt
from promptcache.analyze.tokens import MemoTokenizer
from promptcache.server.chat import ChatRenderer


@dataclass(frozen=True)
class Rendered:
    tokens: list[int]
    roles: list[str]  # one per token
    text: str | None  # the rendered chat prompt (None for completions)


class PromptRenderer:
    def __init__(self, tokenizer):
        self.tokenizer = MemoTokenizer(tokenizer)
        self.chat = ChatRenderer(self.tokenizer) if tokenizer.chat_template is not None else None

    def render(self, prompt: LoggedPrompt) -> Rendered:
        """Raises ValueError for a prompt the server would refuse."""
        if prompt.token_ids is not None:
            return Rendered(list(prompt.token_ids), ["user"] * len(prompt.token_ids), None)
        if prompt.text is not None:
            tokens = self.tokenizer.encode(prompt.text, add_special_tokens=True)
            return Rendered(tokens, ["user"] * len(tokens), None)
        if self.chat is None:
            raise ValueError("the model has no chat template, so chat requests cannot be rendered")
        try:
            out = self.chat.render(prompt.messages, list(prompt.tools) if prompt.tools else None)
        except Exception as exc:  # the server's renderer raises its 400 for a template error
            raise ValueError(f"the chat template refuses it: {getattr(exc, 'detail', exc)}") from None
        return Rendered(out.tokens, list(out.roles), out.text)
