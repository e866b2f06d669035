"""OpenAI's request and response bodies for /v1/chat/completions, /v1/completions, /v1/models.

Field names, defaults and ranges follow OpenAI's API reference, so the official clients work
unchanged; validation failures are turned into OpenAI's 400 error shape by `errors.py`.
Unknown fields are served but named in the `x-ignored-fields` header (clients send many
optional knobs we do not implement, and failing on them would break drop-in use; core/lenient.py),
or refused with --reject-unknown-fields; knobs whose silent omission would mislead are rejected
instead. Logprobs (`logprobs`, `top_logprobs`, `echo`, vLLM's `prompt_logprobs`) are served
as openai/logprobs.py says.

Extensions beyond OpenAI, all optional: `caching` ({"enabled": false} or {"type": "disabled"}
bypasses the prefix cache for one request), `top_k`, `ignore_eos`, `skip_special_tokens`, and
vLLM's `repetition_penalty` and `min_p`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from promptcache.server.core.fields import (INT64_MAX, LogitBias, MinP, Penalty, RepetitionPenalty, Seed, Temperature,
                                            Text, TopK, TopP, joined_text, refusing)
from promptcache.server.core.fields import JsonObject
from promptcache.server.core.lenient import LenientBody
from promptcache.server.prompts.schema import PromptReference
ChatRole = Literal["system", "developer", "user", "assistant", "tool"]


class OpenAIBody(LenientBody):
    """Unknown fields are noted, not refused (core/lenient.py)."""


class TextPart(OpenAIBody):
    type: Literal["text"]
    text: Text


class ChatMessage(OpenAIBody):
    role: ChatRole
    content: Text | list[TextPart] | None = None
    name: Text | None = None
    tool_calls: list[JsonObject] | None = None  # an assistant turn's calls, sent back by the client
    tool_call_id: Text | None = None  # a tool turn: which call it answers

    def text(self) -> str:
        """Content as one string: text parts are joined by newlines, None is empty."""
        return joined_text(self.content)


class StreamOptions(OpenAIBody):
    include_usage: bool | None = None


class CachingOptions(OpenAIBody):
    """Both spellings in use: {"enabled": bool}, and {"type": "enabled" | "disabled"} as the
    AIBrix context-cache proposal sends it through the official clients' extra_body."""

    enabled: bool | None = None
    type: Literal["enabled", "disabled"] | None = None

    @property
    def on(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return self.type != "disabled"


# Choices in one request (n times the prompts): each is a generation of its own in the batch.
MAX_CHOICES = 16

# OpenAI fields this server does not implement, with the values that mean "not used".
UNSUPPORTED = {
    "functions": ([],), "function_call": ("none",), "audio": (), "prediction": (), "web_search_options": (),
    "modalities": (["text"],), "best_of": (1,), "suffix": ("",),
}


class SamplingFields(OpenAIBody):
    """Fields shared by chat and text completions."""

    _refuse_unsupported = refusing(UNSUPPORTED)
    NEUTRAL_FIELDS = frozenset(UNSUPPORTED)

    model: Text
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[Temperature, Field(le=2.0)] | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    repetition_penalty: RepetitionPenalty | None = None  # vLLM's extension: prompt and output tokens
    min_p: MinP | None = None  # vLLM's extension
    stop: Text | Annotated[list[Text], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None  # choices per prompt, sharing its prefill
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None  # chat: a bool; completions: top alternatives, 0..20
    prompt_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None  # vLLM's extension
    ignore_eos: bool = False
    skip_special_tokens: bool = True  # vLLM's extension: False keeps special tokens in the text
    # Prompt caching.
    prompt_cache_key: Text | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    cache_salt: Text | None = None
    caching: CachingOptions | None = None
    # End-user identifiers: logged, and with --isolate-by user they partition the cache.
    user: Text | None = None
    safety_identifier: Text | None = None

    def end_user(self) -> str | None:
        """The end user a request is for: OpenAI's newer `safety_identifier`, else `user`."""
        return self.safety_identifier if self.safety_identifier is not None else self.user


    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)  # an empty stop string would stop at once


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[JsonObject] | None = None
    tool_choice: Literal["auto", "required", "none"] | JsonObject | None = None
    parallel_tool_calls: bool | None = None
    response_format: JsonObject | None = None
    structured_outputs: JsonObject | None = None  # vLLM's extension: json, regex, choice or grammar
    prompt: PromptReference | None = None  # extension: a registered template as the leading system turn

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=INT64_MAX)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    # A string, or token ids; a list of strings or of token-id lists is a batch of prompts.
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_CHOICES)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1, max_length=MAX_CHOICES)
    ]
    echo: bool | None = False
    max_tokens: Annotated[int, Field(ge=0)] | None = None  # 0: with echo, the prompt scored alone

    def prompts(self) -> list:
        """The batch: each prompt as a string or a token-id list."""
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            return list(p)
        return [p]

    def token_limit(self) -> int | None:
        return self.max_tokens


# ---- Responses (documented in the OpenAPI schema; routes build them with model_dump) ----


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "tool_calls"]


class CompletionObject(BaseModel):
    """What every completion object (and chunk) carries, in OpenAI's order; each kind names its
    `object` and `choices`."""

    id: str
    object: str
    created: int
    model: str
    choices: list
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ChatCompletion(CompletionObject):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: list[dict[str, Any] | None] | None = None  # vLLM's extension, when asked for


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(CompletionObject):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]


class TextChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: dict[str, Any] | None = None
    prompt_logprobs: list[dict[str, Any] | None] | None = None  # vLLM's extension, when asked for
    finish_reason: Literal["stop", "length"] | None = None


class TextCompletion(CompletionObject):
    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "promptcache"
    context_length: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
