"""The Responses stream: typed events, each an SSE event named by its `type` and numbered by
`sequence_number`: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, response.output_item.done, then response.completed (or
response.incomplete when max_output_tokens cut the reply, whose message item is then
"incomplete" too).

The closing event is sent only after the response is stored, so a client that continues the
chain the moment it sees it always finds its previous_response_id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from promptcache.engine.api import RequestOutput
from promptcache.server.core.sse import sse_event
from promptcache.server.generation import Generation
from promptcache.server.openai.responses.tools import item_status
from promptcache.server.openai.responses.translate import message_item


class EventStream:
    def __init__(self, gen: Generation, item_id: str, opening: dict):
        self.gen = gen
        self.item_id = item_id
        self.opening = opening  # the Response object as it is before any output
        self.sequence = 0
        self.parts: list[str] = []
        self.finished = False

    def event(self, kind: str, **fields) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(data, event=kind)

    def _where(self) -> dict:
        return {"item_id": self.item_id, "output_index": 0, "content_index": 0}

    def render(self, out: RequestOutput | None) -> list[str]:
        if out is None:
            return [self.event("response.created", response=self.opening),
                    self.event("response.in_progress", response=self.opening),
                    self.event("response.output_item.added", output_index=0,
                               item=message_item(self.item_id, "", "in_progress")),
                    self.event("response.content_part.added", **self._where(),
                               part={"type": "output_text", "text": "", "annotations": []})]
        events = []
        if out.new_text:
            self.parts.append(out.new_text)
            events.append(self.event("response.output_text.delta", **self._where(), delta=out.new_text, logprobs=[]))
        if out.finished:
            self.finished = True
            text = "".join(self.parts)
            events += [self.event("response.output_text.done", **self._where(), text=text, logprobs=[]),
                       self.event("response.content_part.done", **self._where(),
                                  part={"type": "output_text", "text": text, "annotations": []}),
                       self.event("response.output_item.done", output_index=0,
                                  item=message_item(self.item_id, text, item_status(self.gen.finish_reason)))]
        return events

    def error(self, err) -> str:
        return self.event("error", code=err.code, message=err.message, param=err.param)

    async def events(self, finish) -> AsyncIterator[str]:
        """All events; `finish(text)` stores the response and returns its final object."""
        async for event in self.gen.events(self.render, self.error):
            yield event
        if self.finished:
            final = await finish("".join(self.parts))
            kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
            yield self.event(kind, response=final)
