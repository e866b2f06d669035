"""The OpenAI dialect through the official client: chat and text completions, streaming and
not, usage with cached_tokens, and prompt-cache request fields."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from server_prompts import SYSTEM_PROMPT, chat


def test_models_lists_the_served_model(tiny_server):
    models = tiny_server.client().models.list()
    assert [m.id for m in models.data] == [tiny_server.model]


def test_chat_completion_shape_and_usage(tiny_server):
    reply = tiny_server.client().chat.completions.create(
        model=tiny_server.model, messages=chat("Be brief.", "Hello"), max_tokens=5, temperature=0
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.completion_tokens <= 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0


def test_shared_prefix_is_cached_and_gives_the_same_greedy_text(tiny_server):
    client = tiny_server.client()
    ask = lambda user, **kw: client.chat.completions.create(  # noqa: E731
        model=tiny_server.model, messages=chat(SYSTEM_PROMPT, user), max_tokens=12, temperature=0, **kw
    )
    first = ask("What is rule 3?")
    cached = ask("What is rule 4?", extra_body={"prompt_cache_key": "handbook"})
    uncached = ask("What is rule 4?", extra_body={"caching": {"enabled": False}})
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert cached.usage.prompt_tokens_details.cached_tokens >= 300
    assert uncached.usage.prompt_tokens_details.cached_tokens == 0
    assert cached.choices[0].message.content == uncached.choices[0].message.content
    stats = httpx.get(tiny_server.url + "/v1/cache/stats").json()
    assert stats["prompt_cache_keys"]["default"]["handbook"]["cached_tokens"] >= 300


def test_chat_streaming_chunks_end_with_usage_and_done(tiny_server):
    client = tiny_server.client()
    messages = chat(SYSTEM_PROMPT, "Stream please")
    plain = client.chat.completions.create(model=tiny_server.model, messages=messages, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(
        model=tiny_server.model, messages=messages, max_tokens=10, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_stream_ends_with_done(tiny_server):
    body = {"model": tiny_server.model, "messages": chat("x", "y"), "max_tokens": 3, "stream": True}
    with httpx.stream("POST", tiny_server.base_url + "/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


def test_text_completion_plain_and_streaming(tiny_server):
    client = tiny_server.client()
    prompt = SYSTEM_PROMPT + " Continue:"
    plain = client.completions.create(model=tiny_server.model, prompt=prompt, max_tokens=8, temperature=0)
    assert plain.object == "text_completion"
    chunks = list(
        client.completions.create(
            model=tiny_server.model, prompt=prompt, max_tokens=8, temperature=0,
            stream=True, stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


def test_completion_accepts_token_ids_and_max_tokens_gives_length(tiny_server):
    reply = tiny_server.client().completions.create(
        model=tiny_server.model, prompt=[1, 2, 3, 4], max_tokens=4, temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage.prompt_tokens == 4
    assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"


def cache_key_requests(server, key: str) -> int:
    stats = httpx.get(server.url + "/v1/cache/stats").json()
    return stats["prompt_cache_keys"].get("default", {}).get(key, {}).get("requests", 0)


def test_every_supported_field_has_its_effect(tiny_server):
    """developer turns in parts, tool turns, max_tokens, ignore_eos, seed, temperature, top_p, stop,
    cache_salt and prompt_cache_key, each checked by what it changes (prompt_cache_retention's
    lifetimes: test_cache_retention.py)."""
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief. " * 40}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "user", "content": "And?"},
    ]
    client = tiny_server.client()

    def ask(salt: str, **kw):
        kw = {"seed": 7, "temperature": 2.0, "top_p": 0.9, **kw}
        return client.chat.completions.create(
            model=tiny_server.model, messages=messages, max_tokens=8, prompt_cache_key="eight",
            prompt_cache_retention="24h", extra_body={"cache_salt": salt, "ignore_eos": True}, **kw,
        )

    before = cache_key_requests(tiny_server, "eight")
    free = ask("s1")
    text = free.choices[0].message.content
    assert free.usage.completion_tokens == 8 and free.choices[0].finish_reason == "length"  # max_tokens, ignore_eos
    assert free.usage.prompt_tokens_details.cached_tokens == 0
    again = ask("s1")
    assert again.choices[0].message.content == text  # seed: the same sample again
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # same salt: the prefix is reused
    assert ask("s2").usage.prompt_tokens_details.cached_tokens == 0  # another salt: its own partition
    stop = text[len(text) // 2:][:2]  # two characters from the middle of the reply
    assert stop.strip()
    cut = ask("s1", stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]  # cut before the stop string
    assert cut.choices[0].finish_reason == "stop"
    assert cache_key_requests(tiny_server, "eight") - before == 4  # prompt_cache_key counts each request
    greedy = ask("s1", temperature=0).choices[0].message.content
    others = {ask("s1", seed=seed).choices[0].message.content for seed in (8, 9, 10)}
    assert others | {text} != {text}  # seed: another seed, another sample
    assert others | {text} != {greedy}  # temperature: samples, not the greedy reply
    assert ask("s1", top_p=1e-6).choices[0].message.content == greedy  # top_p: only the top token is left


def test_seeded_sampling_is_reproducible(tiny_server):
    client = tiny_server.client()
    ask = lambda **kw: client.chat.completions.create(  # noqa: E731
        model=tiny_server.model, messages=chat("x", "Tell me a story"), max_tokens=10, **kw
    ).choices[0].message.content
    samples = {seed: ask(temperature=2.0, seed=seed) for seed in (1, 2, 3, 123)}
    assert all(ask(temperature=2.0, seed=seed) == text for seed, text in samples.items())  # each replays
    assert len(set(samples.values())) > 1  # the seed decides the sample: it is not ignored
    assert set(samples.values()) != {ask(temperature=0)}  # and they are samples, not the greedy reply


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    text = httpx.get(server.url + "/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(after: dict, before: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_health_and_metrics_count_what_happened(tiny_server):
    assert httpx.get(tiny_server.url + "/health").json()["status"] == "ok"
    before = scrape(tiny_server)
    reply = tiny_server.client().chat.completions.create(
        model=tiny_server.model, messages=chat(SYSTEM_PROMPT, "Count me"), max_tokens=4, temperature=0,
        extra_body={"ignore_eos": True},
    )
    after = scrape(tiny_server)
    usage = reply.usage
    assert delta(after, before, "promptcache_requests_total", endpoint="/v1/chat/completions", status="200") == 1
    assert delta(after, before, "promptcache_prompt_tokens_total") == usage.prompt_tokens
    assert delta(after, before, "promptcache_cached_tokens_total") == usage.prompt_tokens_details.cached_tokens
    assert delta(after, before, "promptcache_completion_tokens_total") == usage.completion_tokens == 4
    assert delta(after, before, "promptcache_time_to_first_token_seconds_count") == 1
    assert delta(after, before, "promptcache_time_per_output_token_seconds_count") == 1
    assert after[("promptcache_queue_requests", (("state", "waiting"),))] == 0
    stats = httpx.get(tiny_server.url + "/v1/cache/stats").json()
    blocks = after[("promptcache_cache_blocks_held", ())]
    assert blocks == stats["blocks_held"] > 0
    assert after[("promptcache_cache_bytes_held", ())] == blocks * stats["block_nbytes"]
    assert after[("promptcache_cache_tenant_bytes_held", (("tenant", "default"),))] == blocks * stats["block_nbytes"]
    assert 0 < after[("promptcache_cache_hit_ratio", ())] <= 1
