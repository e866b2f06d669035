"""Logged prompts -> token ids and per-token roles, exactly as the server computes them.

Chat-shaped prompts (chat, messages, responses) go through the server's own `ChatRenderer`
(the model's chat template, one render, BOS rule, per-token roles for role-tiered eviction);
completions text through the tokenizer with special tokens, as /v1/completions does. Token ids
are taken as they are. Tokens are memoized piece by piece (tokens.py), checked against the
plain tokenizer as it goes. A prompt the template refuses is one the server would answer with a
400, so it is reported as a bad line.
"""

from __future__ import annotations

import multiprocessing
from array import array
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import groupby

from promptcache.analyze.dialects import LoggedPrompt
from promptcache.analyze.tokens import MemoTokenizer
from promptcache.server.chat import ChatRenderer


@dataclass(frozen=True)
class Rendered:
    tokens: Sequence[int]  # a list, or an array('I') from render_all
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


# What forked render workers inherit: set by render_all before its pool starts.
_POOL: dict = {}


def _render_chunk(bounds: tuple[int, int]) -> list:
    """Rendered prompts [start, end) of the shared list, roles run-length encoded (cheap to send)."""
    renderer, prompts = _POOL["renderer"], _POOL["prompts"]
    out: list = []
    for prompt in prompts[bounds[0]:bounds[1]]:
        try:
            done = renderer.render(prompt)
        except ValueError as exc:
            out.append(str(exc))
            continue
        runs = [(role, len(list(same))) for role, same in groupby(done.roles)]  # per token in C, not Python
        out.append((array("I", done.tokens), runs, done.text))
    return out


def _expand(item) -> Rendered | str:
    if isinstance(item, str):
        return item
    tokens, runs, text = item
    roles: list[str] = []
    for role, count in runs:
        roles += [role] * count
    return Rendered(tokens, roles, text)


def render_all(prompts: Sequence[LoggedPrompt], tokenizer, jobs: int = 1, chunk: int = 2000) -> list[Rendered | str]:
    """Every prompt rendered (or the reason it cannot be), in order; in `jobs` forked processes
    when there is more than one chunk, each with its own piece memo."""
    renderer = PromptRenderer(tokenizer)
    bounds = [(start, min(start + chunk, len(prompts))) for start in range(0, len(prompts), chunk)]
    _POOL.update(renderer=renderer, prompts=prompts)
    try:
        if jobs > 1 and len(bounds) > 1 and "fork" in multiprocessing.get_all_start_methods():
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
                parts = list(pool.map(_render_chunk, bounds))
        else:
            parts = [_render_chunk(b) for b in bounds]
    finally:
        _POOL.clear()
    return [_expand(item) for part in parts for item in part]
