"""Gemini request bodies (camelCase, as the REST API spells them). Unknown fields are refused
(400 INVALID_ARGUMENT), as Gemini refuses them, so nothing a client sends is silently ignored;
parts other than text (inline data, files, function calls) are refused the same way."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from promptcache.server.core.fields import Text
from promptcache.server.core.fields import JsonObject


class GeminiBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Part(GeminiBody):
    text: Text


class Content(GeminiBody):
    role: Literal["user", "model"] | None = None
    parts: Annotated[list[Part], Field(min_length=1)]


class FunctionDeclaration(GeminiBody):
    name: Text
    description: Text | None = None
    parameters: JsonObject | None = None


class Tool(GeminiBody):
    functionDeclarations: Annotated[list[FunctionDeclaration], Field(min_length=1)]


class GenerationConfig(GeminiBody):
    maxOutputTokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    topP: Annotated[float, Field(gt=0, le=1)] | None = None
    topK: Annotated[int, Field(ge=0)] | None = None
    stopSequences: Annotated[list[Text], Field(max_length=16)] | None = None
    candidateCount: Literal[1] | None = None
    seed: int | None = None


class GenerateContentRequest(GeminiBody):
    contents: Annotated[list[Content], Field(min_length=1)]
    systemInstruction: Content | None = None
    tools: list[Tool] | None = None
    generationConfig: GenerationConfig | None = None
    cachedContent: Text | None = None


class CachedContentRequest(GeminiBody):
    model: Text
    contents: list[Content] | None = None
    systemInstruction: Content | None = None
    tools: list[Tool] | None = None
    ttl: Text | None = None  # a Duration: "3600s", "1.5s"
    expireTime: Text | None = None  # RFC 3339
    displayName: Annotated[str, Field(max_length=128)] | None = None


class CachedContentUpdate(GeminiBody):
    """Only the expiry may change (Gemini's rule); any other field is refused."""

    ttl: Text | None = None
    expireTime: Text | None = None
