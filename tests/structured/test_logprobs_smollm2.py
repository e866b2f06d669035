"""Logprobs on a live server, the real SmolLM2 in bfloat16 (the serving default), through the
official openai client: generated-token logprobs on chat and completions (streamed too, and per
choice with n > 1), prompt logprobs served from the cache and bitwise those of the cache-off
path, lm-eval's loglikelihood request, a prefix cached without logprobs and filled in later, the
disk tier carrying them, and the 400s for out-of-range counts."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from live_server import start_server  # noqa: E402

from promptcache.server.settings import ServerSettings  # noqa: E402

pytestmark = pytest.mark.slow

CONTEXT = ("Question: which planet is known as the red planet? Mars is the fourth planet from the Sun, and "
           "its surface is covered in iron oxide dust, which gives it a reddish look. ") * 3
OFF = {"caching": {"enabled": False}}


@pytest.fixture(scope="module")
def server(serving_engine):
    assert serving_engine.model.dtype == torch.bfloat16  # the serving default
    live = start_server(ServerSettings(default_max_tokens=8), engine=serving_engine)
    yield live
    live.stop()


def score(server, prompt, k=1, max_tokens=1, **extra):
    """lm-eval's loglikelihood request: echo, logprobs, one generated token."""
    return server.client().completions.create(model=server.model, prompt=prompt, echo=True, logprobs=k,
                                              max_tokens=max_tokens, temperature=0, extra_body=extra or None)


def test_prompt_logprobs_from_the_cache_are_bitwise_the_cache_off_ones(server):
    prompt = CONTEXT + "Answer: Mars"
    off = score(server, prompt, k=5, **OFF)
    first = score(server, prompt, k=5)
    again = score(server, prompt, k=5)
    n = off.usage.prompt_tokens
    lp = off.choices[0].logprobs
    assert off.choices[0].text.startswith(prompt) and len(lp.tokens) == n + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:]) and len(lp.text_offset) == n + 1
    assert all(5 <= len(top) <= 6 for top in lp.top_logprobs[1:])  # the top 5, and the token itself
    assert again.usage.prompt_tokens_details.cached_tokens >= n - 32  # served from the cache
    for reply in (first, again):
        got = reply.choices[0].logprobs
        assert got.token_logprobs == lp.token_logprobs and got.top_logprobs == lp.top_logprobs
        assert got.tokens == lp.tokens and got.text_offset == lp.text_offset


def test_multiple_choice_scores_share_the_context_and_max_tokens_zero_scores_the_prompt_alone(server):
    """Four choices after one context: every one after the first reads the context's blocks
    (and their logprobs) from the cache; max_tokens 0 returns the prompt alone."""
    choices = [" Mars", " Venus", " Jupiter", " Saturn"]
    ctx_tokens = len(server.engine.tokenizer.encode(CONTEXT + "Answer:"))
    on = [score(server, CONTEXT + "Answer:" + c, max_tokens=0) for c in choices]
    off = [score(server, CONTEXT + "Answer:" + c, max_tokens=0, **OFF) for c in choices]
    for a, b in zip(on, off):
        assert a.choices[0].logprobs.token_logprobs == b.choices[0].logprobs.token_logprobs
        assert a.usage.completion_tokens == 0 and a.choices[0].finish_reason == "length"
        assert len(a.choices[0].logprobs.tokens) == a.usage.prompt_tokens
    assert all(r.usage.prompt_tokens_details.cached_tokens >= ctx_tokens - 32 for r in on[1:])
    totals = [sum(r.choices[0].logprobs.token_logprobs[ctx_tokens:]) for r in on]
    assert totals.index(max(totals)) == 0  # " Mars"


def test_a_prefix_cached_without_logprobs_is_scored_once_then_served(server):
    prompt = "The history of the printing press begins in the fifteenth century. " * 6
    server.client().completions.create(model=server.model, prompt=prompt + "A", max_tokens=1)  # KV only
    first = score(server, prompt + "B")
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # its blocks lacked logprobs: recomputed
    again = score(server, prompt + "C")
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    off = score(server, prompt + "C", **OFF)
    assert again.choices[0].logprobs.token_logprobs == off.choices[0].logprobs.token_logprobs


def test_chat_logprobs_and_top_logprobs_streamed_and_whole(server):
    client = server.client()
    messages = [{"role": "user", "content": "Name a red planet."}]
    whole = client.chat.completions.create(model=server.model, messages=messages, max_tokens=6, temperature=0,
                                           logprobs=True, top_logprobs=3)
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens
    assert "".join(c.token for c in content) == whole.choices[0].message.content
    for c in content:
        assert len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob >= c.logprob  # greedy: the top one
        assert c.top_logprobs[0].token == c.token
    streamed = client.chat.completions.create(model=server.model, messages=messages, max_tokens=6, temperature=0,
                                              logprobs=True, top_logprobs=3, stream=True)
    pieces = [e for chunk in streamed for choice in chunk.choices if choice.logprobs for e in choice.logprobs.content]
    assert [(p.token, p.logprob) for p in pieces] == [(c.token, c.logprob) for c in content]


def test_chat_prompt_logprobs_in_vllms_shape(server):
    messages = [{"role": "user", "content": CONTEXT}]
    body = {"model": server.model, "messages": messages, "max_tokens": 1, "prompt_logprobs": 2}
    on = httpx.post(server.base_url + "/chat/completions", json=body, timeout=120).json()
    off = httpx.post(server.base_url + "/chat/completions", json={**body, **OFF}, timeout=120).json()
    assert on["prompt_logprobs"][0] is None and on["prompt_logprobs"] == off["prompt_logprobs"]
    assert len(on["prompt_logprobs"]) == on["usage"]["prompt_tokens"]
    entry = on["prompt_logprobs"][1]
    assert 2 <= len(entry) <= 3 and all({"logprob", "rank", "decoded_token"} <= set(v) for v in entry.values())


def test_completion_logprobs_streamed(server):
    stream = server.client().completions.create(model=server.model, prompt="Once upon a time", max_tokens=4,
                                                temperature=0, logprobs=2, stream=True)
    chunks = [c.choices[0] for c in stream if c.choices]
    tokens = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
    assert len(tokens) == 4 and all(len(top) >= 2 for c in chunks if c.logprobs for top in c.logprobs.top_logprobs)
    echoed = server.client().completions.create(model=server.model, prompt="Once upon a time", max_tokens=4,
                                                temperature=0, logprobs=2, echo=True, stream=True)
    first, *rest = [c.choices[0] for c in echoed if c.choices]
    assert first.text == "Once upon a time" and first.logprobs.token_logprobs[0] is None
    assert [t for c in rest if c.logprobs for t in c.logprobs.tokens] == tokens


@pytest.mark.parametrize("path,body,param", [
    ("/completions", {"prompt": "hi", "logprobs": 21}, "logprobs"),
    ("/completions", {"prompt": "hi", "echo": True, "n": 2, "logprobs": 1}, "echo"),
    ("/completions", {"prompt": "hi", "prompt_logprobs": 21}, "prompt_logprobs"),
    ("/completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21},
     "top_logprobs"),
    ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "prompt_logprobs": 99},
     "prompt_logprobs"),
    ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "prompt_logprobs": 1, "stream": True},
     "prompt_logprobs"),
])
def test_bad_logprob_requests_are_400s_naming_the_parameter(server, path, body, param):
    answer = httpx.post(server.base_url + path, json={"model": server.model, **body}, timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def _entries(logprobs) -> list:
    return [(c.token, c.logprob, [(t.token, t.logprob) for t in c.top_logprobs]) for c in logprobs.content]


def test_chat_n_choices_each_carry_the_logprobs_a_single_request_gets(server):
    """Greedy choices are one reply n times; seeded ones give choice j the seed + j, so choice j
    is the single request with that seed: its tokens and logprobs, whole and streamed."""
    client, messages = server.client(), [{"role": "user", "content": "Name three red things."}]
    ask = dict(model=server.model, messages=messages, max_tokens=6, logprobs=True, top_logprobs=2)
    greedy = client.chat.completions.create(**ask, temperature=0, n=3, extra_body={"prompt_logprobs": 1})
    alone = client.chat.completions.create(**ask, temperature=0, extra_body={"prompt_logprobs": 1})
    assert [_entries(c.logprobs) for c in greedy.choices] == [_entries(alone.choices[0].logprobs)] * 3
    assert greedy.prompt_logprobs == alone.prompt_logprobs and len(greedy.prompt_logprobs) > 1  # one prompt
    seeded = client.chat.completions.create(**ask, temperature=1.0, seed=11, n=2)
    singles = [client.chat.completions.create(**ask, temperature=1.0, seed=11 + j).choices[0] for j in range(2)]
    assert [_entries(c.logprobs) for c in seeded.choices] == [_entries(s.logprobs) for s in singles]
    assert [c.message.content for c in seeded.choices] == [s.message.content for s in singles]
    assert singles[0].message.content != singles[1].message.content  # the seeds did differ
    streamed = {0: [], 1: []}
    for chunk in client.chat.completions.create(**ask, temperature=1.0, seed=11, n=2, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += _entries(choice.logprobs) if choice.logprobs else []
    assert [streamed[0], streamed[1]] == [_entries(s.logprobs) for s in singles]
