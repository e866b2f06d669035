"""Which documented request fields this server acts on, body by body: the rest are named.

A dialect's request model declares the fields its reference documents; declaring one does not
make it do anything. `HANDLED` lists, for every request body of every dialect, the fields some
code reads and acts on (validates, renders, samples with, caches under, stores or echoes).
`unhandled(body)` gives the fields a body was sent that are not listed, and the unknown-field
walk (core/lenient.py) names them in `x-ignored-fields` like a field it has never heard of:
a field added to a model and never wired to anything is reported, not ignored in silence.
`NOTED` lists the documented fields that are accepted but have no effect here, so that the
registry test (tests/server/test_field_registry.py) can tell them from a field nobody
classified: every model field must be in one of the two.

Bodies are keyed by module and class name below `promptcache.server`, so this module imports
no dialect (core sits below them). A body that is not listed has every field handled.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_SAMPLING = frozenset({
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n", "stream",
    "stream_options", "logprobs", "prompt_logprobs", "ignore_eos", "skip_special_tokens",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
    "prompt_cache_key", "prompt_cache_retention", "cache_salt", "caching", "user", "safety_identifier",
})
_CACHE_CONTROLLED = frozenset({"type", "cache_control"})

HANDLED: dict[str, frozenset[str]] = {
    # OpenAI chat and completions
    "openai.schema:ChatCompletionRequest": _SAMPLING | {
        "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
        "response_format", "structured_outputs", "prompt"},
    "openai.schema:CompletionRequest": _SAMPLING | {"prompt", "echo"},
    "openai.schema:ChatMessage": frozenset({"role", "content", "tool_calls", "tool_call_id"}),
    "openai.schema:TextPart": frozenset({"type", "text"}),
    "openai.schema:StreamOptions": frozenset({"include_usage"}),
    "openai.schema:CachingOptions": frozenset({"enabled", "type"}),
    "prompts.schema:PromptReference": frozenset({"id", "version", "variables"}),
    "prompts.schema:InputText": frozenset({"type", "text"}),
    # OpenAI Responses
    "openai.responses.schema:ResponsesRequest": frozenset({
        "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
        "parallel_tool_calls", "store", "previous_response_id", "stream", "metadata", "text", "prompt",
        "prompt_cache_key", "prompt_cache_retention", "caching", "cache_salt", "user", "safety_identifier"}),
    "openai.responses.schema:InputMessage": frozenset({"type", "role", "content"}),
    "openai.responses.schema:ContentText": frozenset({"type", "text"}),
    # a call's and an output's id and status are echoed by GET .../input_items
    "openai.responses.schema:FunctionCallItem": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "openai.responses.schema:FunctionCallOutputItem": frozenset({"type", "call_id", "output", "id", "status"}),
    # Anthropic Messages
    "anthropic.schema:CountTokensRequest": frozenset({
        "model", "messages", "system", "tools", "tool_choice", "output_config", "output_format", "cache_control"}),
    "anthropic.schema:MessagesRequest": frozenset({
        "model", "messages", "system", "tools", "tool_choice", "output_config", "output_format", "cache_control",
        "max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "stream", "metadata"}),
    "anthropic.schema:Message": frozenset({"role", "content"}),
    "anthropic.schema:TextBlock": _CACHE_CONTROLLED | {"text"},
    # a call's id is what its tool_result's tool_use_id (rendered) answers
    "anthropic.schema:ToolUseBlock": _CACHE_CONTROLLED | {"id", "name", "input"},
    "anthropic.schema:ToolResultBlock": _CACHE_CONTROLLED | {"tool_use_id", "content", "is_error"},
    "anthropic.schema:Tool": _CACHE_CONTROLLED | {"name", "description", "input_schema", "strict"},
    "anthropic.schema:CacheControl": frozenset({"type", "ttl"}),
    "anthropic.schema:Metadata": frozenset({"user_id"}),
    # Gemini (its bodies refuse unknown fields; every declared one is read)
    "gemini.schema:GenerateContentRequest": frozenset({
        "contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "cachedContent"}),
    "gemini.schema:Content": frozenset({"role", "parts"}),
    "gemini.schema:Part": frozenset({"text", "functionCall", "functionResponse"}),
    "gemini.schema:FunctionCall": frozenset({"id", "name", "args"}),
    "gemini.schema:FunctionResponse": frozenset({"id", "name", "response"}),
    "gemini.schema:Tool": frozenset({"functionDeclarations"}),
    "gemini.schema:FunctionDeclaration": frozenset({
        "name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema"}),
    "gemini.schema:ToolConfig": frozenset({"functionCallingConfig"}),
    "gemini.schema:FunctionCallingConfig": frozenset({"mode", "allowedFunctionNames"}),
    "gemini.schema:GenerationConfig": frozenset({
        "maxOutputTokens", "temperature", "topP", "topK", "stopSequences", "candidateCount", "seed",
        "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema"}),
    "gemini.schema:CachedContentRequest": frozenset({
        "model", "contents", "systemInstruction", "tools", "toolConfig", "ttl", "expireTime", "displayName"}),
    "gemini.schema:CachedContentUpdate": frozenset({"ttl", "expireTime"}),
    "gemini.schema:CountTokensRequest": frozenset({"contents", "generateContentRequest"}),
    "gemini.schema:CountedRequest": frozenset({
        "model", "contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "cachedContent"}),
}

# Documented, accepted, and without effect here: named in x-ignored-fields when sent.
NOTED: dict[str, frozenset[str]] = {
    "openai.schema:ChatMessage": frozenset({"name"}),  # a participant's name: no template renders it
}


def key(cls: type) -> str:
    """A body's registry key: its module below promptcache.server, and its class name."""
    return f"{cls.__module__.removeprefix('promptcache.server.')}:{cls.__qualname__}"


def unhandled(body: BaseModel) -> list[str]:
    """The fields `body` was sent (not null) that no code acts on, in declaration order."""
    handled = HANDLED.get(key(type(body)))
    if handled is None:
        return []
    sent = body.model_fields_set
    return [name for name in type(body).model_fields
            if name in sent and name not in handled and _value(body, name) is not None]


def _value(body: BaseModel, name: str) -> Any:
    return body.__dict__.get(name)
