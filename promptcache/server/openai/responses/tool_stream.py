"""The Responses stream of a reply under a tool format: held back until the reply ends (its
JSON or `<tool_call>` blocks are parsed whole), then each output item in order, as OpenAI
sends them: a message item with its text events, and for each call
response.output_item.added (status in_progress, empty arguments),
response.function_call_arguments.delta, response.function_call_arguments.done and
response.output_item.done. The closing response.completed carries the same items."""

from __future__ import annotations

from collections.abc import Callable

from promptcache.engine.api import RequestOutput
from promptcache.server.openai.responses.stream import EventStream


class ToolEventStream(EventStream):
    def __init__(self, gen, item_id: str, opening: dict, outcome: Callable[[str], tuple[list[dict], dict, str]]):
        super().__init__(gen, item_id, opening)
        self.outcome = outcome  # text -> (output items, history entry, text); the same call ids as finish's

    def render(self, out: RequestOutput | None) -> list[str]:
        if out is None:
            return [self.event("response.created", response=self.opening),
                    self.event("response.in_progress", response=self.opening)]
        self.parts.append(out.new_text)
        if not out.finished:
            return []
        self.finished = True
        events = []
        for index, item in enumerate(self.outcome("".join(self.parts))[0]):
            events += self._item_events(index, item)
        return events

    def _item_events(self, index: int, item: dict) -> list[str]:
        if item["type"] == "function_call":
            where = {"item_id": item["id"], "output_index": index}
            return [self.event("response.output_item.added", output_index=index,
                               item={**item, "arguments": "", "status": "in_progress"}),
                    self.event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
                    self.event("response.function_call_arguments.done", **where, arguments=item["arguments"]),
                    self.event("response.output_item.done", output_index=index, item=item)]
        text = item["content"][0]["text"]
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        part = {"type": "output_text", "text": text, "annotations": []}
        return [self.event("response.output_item.added", output_index=index,
                           item={**item, "status": "in_progress", "content": []}),
                self.event("response.content_part.added", **where, part={**part, "text": ""}),
                self.event("response.output_text.delta", **where, delta=text, logprobs=[]),
                self.event("response.output_text.done", **where, text=text, logprobs=[]),
                self.event("response.content_part.done", **where, part=part),
                self.event("response.output_item.done", output_index=index, item=item)]
