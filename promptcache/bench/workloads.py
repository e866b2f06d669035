"""Seeded workloads: the same seed and sizes give the same conversations, byte for byte.

A workload is a list of conversations. Each has a fixed opening (a system prompt, a document,
a tool list) and a list of user turns; the runner sends the turns in order, appending each
reply to the conversation's history, so later turns extend earlier prompts as a real chat does.

Sizes are in tokens, approximately: text is drawn from common English words, which BPE
tokenizers encode as about one token each. The server's `usage.prompt_tokens` gives the exact
count for each request, and that is what the report shows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their has been would more if will what when can so out up no "
    "about into them some could time these two may then do first any my now such like our over man me even "
    "most made after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see men work long "
    "get here between both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three system answer question document tool result "
    "value order price river city table report number water light music paper plant story field power"
).split()


@dataclass(frozen=True)
class Conversation:
    """One conversation: `opening` messages (shared with others or not), then user turns."""

    id: int
    opening: tuple[dict[str, str], ...]
    turns: tuple[str, ...]
    tools: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class Sizes:
    conversations: int = 8  # conversations (chat), questions (rag), sessions (agent), users (shared-system)
    turns: int = 3  # user turns per conversation (agent: tool-call steps)
    shared_tokens: int = 512  # system prompt, document or tool list
    turn_tokens: int = 24  # each user message
    documents: int = 2  # rag: distinct documents the questions are about


@dataclass
class _Text:
    rng: random.Random

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(max(1, n)))


def _system(text: _Text, n: int) -> dict[str, str]:
    return {"role": "system", "content": "You are a helpful assistant. " + text.words(n - 6)}


def chat(sizes: Sizes, text: _Text) -> list[Conversation]:
    """Several multi-turn conversations behind one shared system prompt."""
    system = _system(text, sizes.shared_tokens)
    return [Conversation(i, (system,), tuple(text.words(sizes.turn_tokens) for _ in range(sizes.turns)))
            for i in range(sizes.conversations)]


def rag(sizes: Sizes, text: _Text) -> list[Conversation]:
    """A few long documents, each reused by many one-turn questions (taken round-robin)."""
    docs = [f"Answer from this document only.\n\nDocument {d}:\n{text.words(sizes.shared_tokens)}"
            for d in range(max(1, sizes.documents))]
    return [Conversation(i, ({"role": "system", "content": docs[i % len(docs)]},),
                         (f"Question {i}: {text.words(sizes.turn_tokens)}?",))
            for i in range(sizes.conversations)]


def _tool(text: _Text, index: int, n: int) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": f"tool_{index}", "description": text.words(n),
        "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": text.words(4)}},
                       "required": ["query"]}}}


def agent(sizes: Sizes, text: _Text) -> list[Conversation]:
    """A long system prompt and tool list, then many short steps, each reporting a tool result."""
    num_tools = max(1, sizes.shared_tokens // 64)
    tools = tuple(_tool(text, t, 40) for t in range(num_tools))
    system = _system(text, max(16, sizes.shared_tokens // 4))
    return [Conversation(i, (system,), (f"Task {i}: {text.words(sizes.turn_tokens)}",) + tuple(
        f"Result of tool_{step % num_tools}: {text.words(max(4, sizes.turn_tokens // 2))}. Next step?"
        for step in range(1, sizes.turns)), tools) for i in range(sizes.conversations)]


def shared_system(sizes: Sizes, text: _Text) -> list[Conversation]:
    """Many independent users, one question each, behind one long system prompt."""
    system = _system(text, sizes.shared_tokens)
    return [Conversation(i, (system,), (text.words(sizes.turn_tokens),)) for i in range(sizes.conversations)]


WORKLOADS: dict[str, Callable[[Sizes, _Text], list[Conversation]]] = {
    "chat": chat,
    "rag": rag,
    "agent": agent,
    "shared-system": shared_system,
}


def build(name: str, sizes: Sizes, seed: int = 0) -> list[Conversation]:
    """The conversations of workload `name`; the same arguments always give the same text."""
    try:
        make = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}") from None
    for option in ("conversations", "turns", "shared_tokens", "turn_tokens", "documents"):
        if getattr(sizes, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1")
    return make(sizes, _Text(random.Random(f"{name}/{seed}")))
