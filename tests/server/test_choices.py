"""n > 1 and batched prompts on /v1/completions through the official client (live server, tiny
model): choices in OpenAI's order, greedy choices equal to a single request's text, the
choices of a prompt sharing its prefill through the cache, streaming with one usage chunk."""

from __future__ import annotations

import re

import httpx
from server_prompts import SYSTEM_PROMPT


def cached_total(server) -> float:
    text = httpx.get(server.url + "/metrics").text
    return float(re.search(r"^promptcache_cached_tokens_total (\S+)$", text, re.M).group(1))


def test_n_choices_share_one_prefill(tiny_server):
    client = tiny_server.client()
    prompt = "Choices edition. " + SYSTEM_PROMPT
    before = cached_total(tiny_server)
    reply = client.completions.create(model=tiny_server.model, prompt=prompt, max_tokens=4, temperature=0, n=3)
    single = client.completions.create(model=tiny_server.model, prompt=prompt, max_tokens=4, temperature=0,
                                       extra_body={"caching": {"enabled": False}})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.text for c in reply.choices} == {single.choices[0].text}
    # Usage counts the prompt once; the two later choices read it from the cache.
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens
    assert reply.usage.completion_tokens == 3 * single.usage.completion_tokens
    shared = cached_total(tiny_server) - before
    assert shared >= 2 * (single.usage.prompt_tokens // 16 * 16 - 16)


def test_batched_prompts_come_back_in_order_and_match_single_requests(tiny_server):
    client = tiny_server.client()
    prompts = ["Batch one: " + SYSTEM_PROMPT[:200], "Batch two: " + SYSTEM_PROMPT[:300]]
    batch = client.completions.create(model=tiny_server.model, prompt=prompts, max_tokens=3, temperature=0, n=2)
    singles = [client.completions.create(model=tiny_server.model, prompt=p, max_tokens=3, temperature=0)
               for p in prompts]
    assert [c.text for c in batch.choices] == [s.choices[0].text for s in singles for _ in range(2)]
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)


def test_streamed_choices_carry_their_index_and_one_usage_chunk(tiny_server):
    client = tiny_server.client()
    prompt = "Stream choices. " + SYSTEM_PROMPT[:400]
    chunks = list(client.completions.create(model=tiny_server.model, prompt=prompt, max_tokens=3, temperature=0,
                                            n=2, stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1  # one completion, one id
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    single = client.completions.create(model=tiny_server.model, prompt=prompt, max_tokens=3, temperature=0)
    assert texts == {0: single.choices[0].text, 1: single.choices[0].text}
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and chunks[-1].usage is not None
    assert usage[0].completion_tokens == 2 * single.usage.completion_tokens


def test_chat_n_choices_share_one_prefill_and_stream_by_index(tiny_server):
    client = tiny_server.client()
    messages = [{"role": "system", "content": "Chat choices. " + SYSTEM_PROMPT}, {"role": "user", "content": "Hi"}]
    before = cached_total(tiny_server)
    reply = client.chat.completions.create(model=tiny_server.model, messages=messages, max_tokens=4, temperature=0,
                                           n=3)
    single = client.chat.completions.create(model=tiny_server.model, messages=messages, max_tokens=4,
                                            temperature=0, extra_body={"caching": {"enabled": False}})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {single.choices[0].message.content}
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens
    assert reply.usage.completion_tokens == 3 * single.usage.completion_tokens
    assert cached_total(tiny_server) - before >= 2 * (single.usage.prompt_tokens // 16 * 16 - 16)
    stream = client.chat.completions.create(model=tiny_server.model, messages=messages, max_tokens=4, temperature=0,
                                            n=2, stream=True, stream_options={"include_usage": True})
    texts, usage, ids = {0: "", 1: ""}, [], set()
    for chunk in stream:
        ids.add(chunk.id)
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        if chunk.usage is not None:
            usage.append(chunk.usage)
    assert texts == {0: single.choices[0].message.content, 1: single.choices[0].message.content}
    assert len(ids) == 1 and len(usage) == 1 and usage[0].completion_tokens == 2 * single.usage.completion_tokens


def test_streamed_choices_send_no_usage_chunk_unless_asked(tiny_server):
    client = tiny_server.client()
    prompt = "No usage. " + SYSTEM_PROMPT[:200]
    text = list(client.completions.create(model=tiny_server.model, prompt=prompt, max_tokens=2, temperature=0,
                                          n=2, stream=True))
    chat = list(client.chat.completions.create(model=tiny_server.model, max_tokens=2, temperature=0, n=2,
                                               stream=True, messages=[{"role": "user", "content": prompt}]))
    for chunks in (text, chat):
        assert {choice.index for chunk in chunks for choice in chunk.choices} == {0, 1}
        assert all(chunk.usage is None and chunk.choices for chunk in chunks)
