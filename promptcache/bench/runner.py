"""Sending a workload to one or two OpenAI-compatible endpoints and timing every request.

Each request is streamed with the official `openai` client. Time-to-first-token is measured
from sending the request to the first chunk carrying text; inter-token latency is the mean gap
between text chunks after that; total latency runs to the end of the stream. `cached_tokens`
comes from `usage.prompt_tokens_details` of the final chunk (asked for with
`stream_options.include_usage`), and is None when the server does not report it.

Conversations run as concurrent tasks; a semaphore caps the requests in flight, so with
`concurrency=1` the conversations' turns interleave one request at a time. With two endpoints
(`--compare`) every turn is sent to both, alternating which goes first, each endpoint keeping
its own history of replies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from promptcache.bench.workloads import Conversation


@dataclass
class Row:
    """One request's measurements (the per-request rows of --out)."""

    endpoint: str
    conversation: int
    turn: int
    start_s: float  # since the run began
    ttft_s: float | None
    itl_s: float | None  # mean gap between text chunks after the first
    total_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None  # None: the server does not report it
    error: str | None = None

    @property
    def cached_share(self) -> float | None:
        if self.cached_tokens is None or not self.prompt_tokens:
            return None
        return self.cached_tokens / self.prompt_tokens

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cached_share": self.cached_share}


@dataclass(frozen=True)
class Endpoint:
    label: str
    client: Any  # openai.AsyncOpenAI
    model: str


async def stream_one(endpoint: Endpoint, messages: list[dict], tools, max_tokens: int,
                     clock: Callable[[], float]) -> tuple[str, dict[str, Any]]:
    """Send one streamed chat request; returns the reply text and its measurements."""
    extra = {"tools": list(tools)} if tools else {}
    start = clock()
    first = last = None
    gaps: list[float] = []
    parts: list[str] = []
    usage = None
    stream = await endpoint.client.chat.completions.create(
        model=endpoint.model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, **extra)
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        deltas = [c.delta for c in chunk.choices if c.delta is not None]
        text = "".join(d.content or "" for d in deltas)
        # A tool call's arguments are the reply's first tokens too (an agent step may write no text).
        calls = "".join(call.function.arguments or "" for d in deltas for call in d.tool_calls or ()
                        if call.function is not None)
        if text or calls:
            now = clock()
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
            parts.append(text)
    end = clock()
    details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
    return "".join(parts), dict(
        ttft_s=None if first is None else first - start,
        itl_s=sum(gaps) / len(gaps) if gaps else None,
        total_s=end - start,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        cached_tokens=getattr(details, "cached_tokens", None),
    )


class Runner:
    """Runs conversations against endpoints; `rows` fills in as requests finish."""

    def __init__(self, endpoints: list[Endpoint], concurrency: int, max_tokens: int,
                 on_request: Callable[[Row], None] = lambda row: None, clock: Callable[[], float] = time.perf_counter):
        if concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        self.endpoints = endpoints
        self.max_tokens = max_tokens
        self.rows: list[Row] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._on_request = on_request
        self._clock = clock
        self._t0 = clock()

    async def run(self, conversations: list[Conversation]) -> list[Row]:
        self._t0 = self._clock()
        await asyncio.gather(*(self._conversation(c) for c in conversations))
        return self.rows

    async def _conversation(self, conv: Conversation) -> None:
        histories = {e.label: list(conv.opening) for e in self.endpoints}
        failed: set[str] = set()
        for turn, user_text in enumerate(conv.turns):
            order = self.endpoints if turn % 2 == 0 else self.endpoints[::-1]
            for endpoint in order:
                if endpoint.label in failed:
                    continue
                history = histories[endpoint.label]
                history.append({"role": "user", "content": user_text})
                reply = await self._request(endpoint, conv, turn, history)
                if reply is None:  # the rest of this conversation would not be comparable
                    failed.add(endpoint.label)
                else:
                    history.append({"role": "assistant", "content": reply})

    async def _request(self, endpoint: Endpoint, conv: Conversation, turn: int, messages: list[dict]) -> str | None:
        async with self._slots:
            start = self._clock()
            try:
                reply, measured = await stream_one(endpoint, messages, conv.tools, self.max_tokens, self._clock)
                row = Row(endpoint.label, conv.id, turn, start - self._t0, **measured)
            except Exception as exc:  # an API or connection error is a result, not a crash
                reply = None
                row = Row(endpoint.label, conv.id, turn, start - self._t0, None, None, self._clock() - start,
                          None, None, None, error=f"{type(exc).__name__}: {exc}"[:300])
        self.rows.append(row)
        self._on_request(row)
        return reply
