"""The Responses API request body, with the field names and ranges of OpenAI's reference.

Input items we cannot honour fail validation with a 400 naming the item (images and files are
not served): nothing is dropped in silence. Function calls and their outputs are rendered back
as the model wrote and read them (tools.py). `text.format` (json_object, json_schema) is enforced by
the decoder, as `response_format` is on chat (server/structured/).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from promptcache.server.core.fields import JsonObject, JsonValue, Metadata, Temperature, Text, TopP, refusing
from promptcache.server.openai.schema import CachingOptions, OpenAIBody
from promptcache.server.prompts.schema import PromptReference


class ContentText(OpenAIBody):
    type: Literal["input_text", "output_text"]
    text: Text


class InputMessage(OpenAIBody):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Text | Annotated[list[ContentText], Field(min_length=1)]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class FunctionCallItem(OpenAIBody):
    """An earlier reply's call, sent back by a client that keeps its own history."""

    type: Literal["function_call"]
    call_id: Text
    name: Text
    arguments: Text
    id: Text | None = None
    status: Text | None = None


class FunctionCallOutputItem(OpenAIBody):
    """A tool's result, answering the call with the same `call_id`."""

    type: Literal["function_call_output"]
    call_id: Text
    output: Text | Annotated[list[ContentText], Field(min_length=1)]
    id: Text | None = None
    status: Text | None = None

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "\n".join(part.text for part in self.output)


InputItem = InputMessage | FunctionCallItem | FunctionCallOutputItem


# Responses fields this server does not implement, with the values that mean "not used".
UNSUPPORTED = {
    "background": (False,), "conversation": (), "include": ([],), "top_logprobs": (0,),
    "reasoning": ({},), "truncation": ("disabled",), "max_tool_calls": (),
}


class ResponsesRequest(OpenAIBody):
    model: Text
    input: Text | Annotated[list[InputItem], Field(min_length=1)] | None = None  # optional with a `prompt`
    instructions: Text | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[Temperature, Field(le=2.0)] | None = None
    top_p: TopP | None = None
    tools: list[JsonObject] | None = None
    tool_choice: JsonValue = None
    parallel_tool_calls: bool | None = None
    store: bool = True
    previous_response_id: Text | None = None
    stream: bool = False
    metadata: Metadata | None = None  # stored with the response: OpenAI's limits
    text: JsonObject | None = None
    prompt: PromptReference | None = None  # a registered template (/v1/prompts), rendered first
    # Prompt caching.
    prompt_cache_key: Text | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    caching: CachingOptions | None = None  # extension: {"type": "enabled" | "disabled"}
    cache_salt: Text | None = None  # extension: a partition inside the caller's tenant
    user: Text | None = None
    safety_identifier: Text | None = None

    _refuse_unsupported = refusing(UNSUPPORTED)
    NEUTRAL_FIELDS = frozenset(UNSUPPORTED)

    @model_validator(mode="after")
    def _input_or_prompt(self) -> ResponsesRequest:
        if self.input is None and self.prompt is None:
            raise ValueError("give 'input', or a 'prompt' whose template is the whole request")
        return self

    def end_user(self) -> str | None:
        return self.safety_identifier if self.safety_identifier is not None else self.user

    def items(self) -> list[InputItem]:
        if self.input is None:  # a prompt alone
            return []
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return list(self.input)
