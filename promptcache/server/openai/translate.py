"""OpenAI request fields -> the neutral spec, and neutral usage -> OpenAI's usage object."""

from __future__ import annotations

from promptcache.server.core.fields import logit_bias_pairs
from promptcache.server.core.spec import CacheSpec, SamplingSpec
from promptcache.server.core.usage import TokenUsage
from promptcache.server.openai.logprobs import chat_counts, completion_counts
from promptcache.server.openai.schema import ChatCompletionRequest, PromptTokensDetails, SamplingFields, Usage

# prompt_cache_retention: "in_memory" keeps the cache's default lifetime, "24h" a day.
RETENTION_TTL_S = {"in_memory": None, "24h": 86_400.0}


def sampling_spec(body: SamplingFields, limit: int | None) -> SamplingSpec:
    logprobs, prompt_logprobs = (chat_counts if isinstance(body, ChatCompletionRequest) else completion_counts)(body)
    return SamplingSpec(
        max_tokens=limit or (1 if limit == 0 else None),  # 0 (echo): one token, dropped (openai/logprobs.py)
        temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, seed=body.seed,
        stop=body.stop_strings(), ignore_eos=body.ignore_eos, skip_special_tokens=body.skip_special_tokens,
        logprobs=logprobs, prompt_logprobs=prompt_logprobs,
        presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty, logit_bias=logit_bias_pairs(body.logit_bias), min_p=body.min_p,
    )


def cache_spec(body: SamplingFields) -> CacheSpec:
    return CacheSpec(
        enabled=body.caching.on if body.caching is not None else True,
        salt=body.cache_salt,
        ttl_s=RETENTION_TTL_S[body.prompt_cache_retention or "in_memory"],
        cache_key=body.prompt_cache_key,
        end_user=body.end_user(),
    )


def openai_usage(usage: TokenUsage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt, completion_tokens=usage.completion, total_tokens=usage.total,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached),
    )
