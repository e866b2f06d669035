"""Gemini request bodies (camelCase, as the REST API spells them; a field's snake_case proto
name is read as well, as protobuf's JSON reader does and google-genai sometimes sends). Unknown
fields are refused (400 INVALID_ARGUMENT), as Gemini refuses them, so nothing a client sends is
silently ignored; parts other than text, functionCall and functionResponse (inline data, files)
are refused the same way."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from promptcache.server.core.fields import Penalty, Seed, Text
from promptcache.server.core.fields import JsonObject, JsonValue


class GeminiBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _proto_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and any("_" in key for key in data if isinstance(key, str)):
            return {to_camel(k) if isinstance(k, str) and "_" in k.strip("_") else k: v for k, v in data.items()}
        return data


class FunctionCall(GeminiBody):
    name: Text
    args: JsonObject | None = None
    id: Text | None = None


class FunctionResponse(GeminiBody):
    name: Text
    response: JsonObject
    id: Text | None = None


class Part(GeminiBody):
    """One of text, a functionCall (in a model turn) or a functionResponse (in a user turn)."""

    text: Text | None = None
    functionCall: FunctionCall | None = None
    functionResponse: FunctionResponse | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Part:
        if sum(v is not None for v in (self.text, self.functionCall, self.functionResponse)) != 1:
            raise ValueError("a part holds exactly one of text, functionCall, functionResponse")
        return self


class Content(GeminiBody):
    role: Literal["user", "model", "function"] | None = None  # "function": older clients' function responses
    parts: Annotated[list[Part], Field(min_length=1)]


class FunctionDeclaration(GeminiBody):
    """`parameters` is Gemini's OpenAPI subset, `parametersJsonSchema` a JSON Schema (not both);
    what the function returns (`response`, `responseJsonSchema`) is shown to the model with it."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")]
    description: Text | None = None
    parametersJsonSchema: JsonObject | None = None
    response: JsonObject | None = None
    responseJsonSchema: JsonValue = None  # any JSON Schema, a bare {"type": "string"} included
    parameters: JsonObject | None = None


class FunctionCallingConfig(GeminiBody):
    mode: Literal["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"] | None = None
    allowedFunctionNames: Annotated[list[Text], Field(min_length=1)] | None = None


class ToolConfig(GeminiBody):
    functionCallingConfig: FunctionCallingConfig | None = None


class Tool(GeminiBody):
    """Function declarations; Gemini's other tools (googleSearch, codeExecution) are refused by
    name, as unknown fields."""

    functionDeclarations: Annotated[list[FunctionDeclaration], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _declares(self) -> Tool:
        if self.functionDeclarations is None:
            raise ValueError("a tool here holds functionDeclarations")
        return self


class GenerationConfig(GeminiBody):
    maxOutputTokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    topP: Annotated[float, Field(gt=0, le=1)] | None = None
    topK: Annotated[int, Field(ge=0)] | None = None
    stopSequences: Annotated[list[Text], Field(max_length=16)] | None = None
    responseMimeType: Literal["text/plain", "application/json", "text/x.enum"] | None = None
    responseSchema: JsonObject | None = None  # Gemini's OpenAPI subset (gemini/openapi.py)
    responseJsonSchema: JsonObject | None = None  # a JSON Schema
    candidateCount: Literal[1] | None = None
    seed: Seed | None = None  # bounded as OpenAI's (int64): torch refuses seeds past 2**64 - 1
    presencePenalty: Penalty | None = None
    frequencyPenalty: Penalty | None = None


class GenerateContentRequest(GeminiBody):
    contents: Annotated[list[Content], Field(min_length=1)]
    systemInstruction: Content | None = None
    tools: list[Tool] | None = None
    toolConfig: ToolConfig | None = None
    generationConfig: GenerationConfig | None = None
    cachedContent: Text | None = None


class CountedRequest(GenerateContentRequest):
    model: Text | None = None  # countTokens' generateContentRequest names its model


class CountTokensRequest(GeminiBody):
    """countTokens: `contents` alone, or a whole `generateContentRequest` (not both)."""

    contents: Annotated[list[Content], Field(min_length=1)] | None = None
    generateContentRequest: CountedRequest | None = None


class CachedContentRequest(GeminiBody):
    model: Text
    contents: list[Content] | None = None
    systemInstruction: Content | None = None
    tools: list[Tool] | None = None
    toolConfig: ToolConfig | None = None
    ttl: Text | None = None  # a Duration: "3600s", "1.5s"
    expireTime: Text | None = None  # RFC 3339
    displayName: Annotated[str, Field(max_length=128)] | None = None


class CachedContentUpdate(GeminiBody):
    """Only the expiry may change (Gemini's rule); any other field is refused."""

    ttl: Text | None = None
    expireTime: Text | None = None
