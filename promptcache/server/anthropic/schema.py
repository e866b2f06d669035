"""Anthropic's Messages API bodies (POST /v1/messages, /v1/messages/count_tokens), with the
field names, types and ranges of Anthropic's API reference, so the official `anthropic`
client works unchanged.

Content blocks we cannot honour (images, documents, thinking) fail validation with a 400 that
names the block, rather than being dropped from the prompt. Unknown fields are
served, as Anthropic's own API does for forward compatibility, but named in the
`x-ignored-fields` header (or refused with --reject-unknown-fields); those listed in
`UNSUPPORTED` would change the reply and so are refused. Structured outputs
(`output_config`, `output_format`) are read in translate.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from promptcache.server.core.fields import Temperature, Text, TopK, TopP, joined_text, refusing
from promptcache.server.core.fields import JsonObject
from promptcache.server.core.lenient import LenientBody

# Anthropic's cap on explicit cache breakpoints in one request; a fifth is a 400, as there.
MAX_BREAKPOINTS = 4
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


class AnthropicBody(LenientBody):
    """Unknown fields are noted, not refused (core/lenient.py)."""


class CacheControl(AnthropicBody):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] = "5m"


class TextBlock(AnthropicBody):
    type: Literal["text"]
    text: Text
    cache_control: CacheControl | None = None


class ToolUseBlock(AnthropicBody):
    type: Literal["tool_use"]
    id: Text
    name: Text
    input: JsonObject
    cache_control: CacheControl | None = None


class ToolResultBlock(AnthropicBody):
    type: Literal["tool_result"]
    tool_use_id: Text
    content: Text | list[TextBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None

    def text(self) -> str:
        return joined_text(self.content)


Block = Annotated[Union[TextBlock, ToolUseBlock, ToolResultBlock], Field(discriminator="type")]


class Message(AnthropicBody):
    role: Literal["user", "assistant"]
    content: Text | Annotated[list[Block], Field(min_length=1)]

    def blocks(self) -> list:
        return [TextBlock(type="text", text=self.content)] if isinstance(self.content, str) else list(self.content)


class Tool(AnthropicBody):
    # A client tool; Anthropic's server tools (bash, web search...) have other types, refused.
    type: Literal["custom"] | None = None
    name: Annotated[Text, Field(min_length=1, max_length=128)]
    description: Text | None = None
    input_schema: JsonObject
    cache_control: CacheControl | None = None
    # Every tool's input is held to its input_schema by the grammar, strict or not; `strict`
    # also makes a schema keyword the grammar cannot enforce a 400 instead of a header.
    strict: bool | None = None


class Metadata(AnthropicBody):
    user_id: Text | None = None


# Messages fields this server does not implement, with the values that mean "not used";
# `diagnostics` asks for Anthropic's miss diagnostics, which POST /v1/cache/explain answers.
UNSUPPORTED = {"thinking": ({"type": "disabled"},), "diagnostics": (), "container": ()}


class CountTokensRequest(AnthropicBody):
    _refuse_unsupported = refusing(UNSUPPORTED)
    NEUTRAL_FIELDS = frozenset(UNSUPPORTED)

    model: Text
    messages: Annotated[list[Message], Field(min_length=1)]
    system: Text | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: JsonObject | None = None
    # Structured outputs: GA `output_config.format` or the beta's `output_format` (translate.py).
    output_config: JsonObject | None = None
    output_format: JsonObject | None = None
    # Automatic caching: a breakpoint on the last block of the conversation (one of the four).
    cache_control: CacheControl | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: Annotated[int, Field(ge=1)]
    temperature: Annotated[Temperature, Field(le=1.0)] | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    stop_sequences: Annotated[list[Text], Field(max_length=16)] | None = None
    stream: bool = False
    metadata: Metadata | None = None


# ---- responses -------------------------------------------------------------------------


class CacheCreation(BaseModel):
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class MessagesUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation: CacheCreation = Field(default_factory=CacheCreation)


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessageReply(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextContent | ToolUseContent]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: MessagesUsage
