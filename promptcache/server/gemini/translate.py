"""Gemini shapes <-> the neutral server core: Durations and timestamps, generationConfig to a
SamplingSpec, and the response objects (contents and tools: gemini/tools.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from promptcache.server.core.spec import SamplingSpec
from promptcache.server.core.usage import TokenUsage
from promptcache.server.errors import bad_request
from promptcache.server.gemini.schema import GenerationConfig, Tool

DEFAULT_TTL_S = 3600.0  # Gemini's default for a cached content
MAX_TTL_S = 30 * 86_400.0


def model_name(value: str) -> str:
    return value.removeprefix("models/")


def declarations(tools: list[Tool] | None) -> list[dict] | None:
    """Every functionDeclaration, as sent: what the tool limits count and measure."""
    if not tools:
        return None
    return [f.model_dump(exclude_none=True) for tool in tools for f in tool.functionDeclarations]


def duration_s(value: str, param: str = "ttl") -> float:
    """A protobuf Duration in JSON ("3600s", "0.5s") as seconds: positive, at most 30 days."""
    try:
        seconds = float(value.removesuffix("s")) if value.endswith("s") else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TTL_S):
        raise bad_request(f"{param} must be a duration such as \"3600s\", more than 0 and at most "
                          f"{MAX_TTL_S:.0f}s", param=param)
    return seconds


def parse_time(value: str, param: str = "expireTime") -> float:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{param} must be an RFC 3339 timestamp such as \"2026-01-01T00:00:00Z\"",
                          param=param) from None
    if moment.tzinfo is None:
        raise bad_request(f"{param} must name its time zone (\"Z\" for UTC)", param=param)
    return moment.timestamp()


def lifetime(ttl: str | None, expire_time: str | None, now: float, default: float | None) -> float | None:
    """Seconds from `now` that a cached content lives: `ttl` or `expireTime` (not both)."""
    if ttl is not None and expire_time is not None:
        raise bad_request("give either ttl or expireTime, not both", param="ttl")
    if ttl is not None:
        return duration_s(ttl)
    if expire_time is not None:
        left = parse_time(expire_time) - now
        if not 0 < left <= MAX_TTL_S:
            raise bad_request("expireTime must be in the future and at most 30 days away", param="expireTime")
        return left
    return default


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sampling_spec(config: GenerationConfig | None) -> SamplingSpec:
    c = config or GenerationConfig()
    return SamplingSpec(max_tokens=c.maxOutputTokens, temperature=c.temperature, top_p=c.topP, top_k=c.topK,
                        seed=c.seed, stop=tuple(c.stopSequences or ()), presence_penalty=c.presencePenalty,
                        frequency_penalty=c.frequencyPenalty)


def usage_metadata(usage: TokenUsage) -> dict:
    meta = {"promptTokenCount": usage.prompt, "candidatesTokenCount": usage.completion,
            "totalTokenCount": usage.prompt + usage.completion}
    if usage.cached:
        meta["cachedContentTokenCount"] = usage.cached
    return meta


def candidate(parts: list[dict], finish_reason: str | None) -> dict:
    out: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish_reason is not None:
        out["finishReason"] = "MAX_TOKENS" if finish_reason == "length" else "STOP"
    return out
