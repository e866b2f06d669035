"""Bad input is a 4xx in OpenAI's error shape, never a 500; a full queue is a 429; a client
that goes away stops its generation."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from server_prompts import chat
from live_server import start_server

from promptcache.server.settings import ServerSettings

MSGS = chat("a", "b")


def case(status, body, param=None, raw=None):
    return (status, body, param, raw)


# (status, JSON body or None, expected error.param, raw body bytes instead of JSON)
CHAT_CASES = {
    "malformed json": case(400, None, None, b'{"model": "x", "messages": ['),
    "not an object": case(400, None, None, b"[1, 2, 3]"),
    "missing messages": case(400, {"model": "M"}, "messages"),
    "empty messages": case(400, {"model": "M", "messages": []}, "messages"),
    "unknown model": case(404, {"model": "gpt-nope", "messages": MSGS}, "model"),
    "missing model": case(400, {"messages": MSGS}, "model"),
    "bad role": case(400, {"model": "M", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    "content wrong type": case(400, {"model": "M", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    "image part": case(
        400,
        {"model": "M", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0].type",
    ),
    "temperature high": case(400, {"model": "M", "messages": MSGS, "temperature": 2.5}, "temperature"),
    "temperature string": case(400, {"model": "M", "messages": MSGS, "temperature": "hot"}, "temperature"),
    "top_p high": case(400, {"model": "M", "messages": MSGS, "top_p": 1.5}, "top_p"),
    "max_tokens zero": case(400, {"model": "M", "messages": MSGS, "max_tokens": 0}, "max_tokens"),
    "max_completion_tokens negative": case(
        400, {"model": "M", "messages": MSGS, "max_completion_tokens": -3}, "max_completion_tokens"
    ),
    "n two": case(400, {"model": "M", "messages": MSGS, "n": 2}, "n"),
    "over the context": case(400, {"model": "M", "messages": MSGS, "max_tokens": 10**7}, "max_tokens"),
    "stop wrong type": case(400, {"model": "M", "messages": MSGS, "stop": 7}, "stop"),
    "stream not bool": case(400, {"model": "M", "messages": MSGS, "stream": "maybe"}, "stream"),
    "bad retention": case(400, {"model": "M", "messages": MSGS, "prompt_cache_retention": "1y"}, "prompt_cache_retention"),
    "lone surrogate": case(400, None, "messages[0].content", b'{"model": "M", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    "seed too big": case(400, {"model": "M", "messages": MSGS, "seed": 2**70}, "seed"),
    "logprobs": case(400, {"model": "M", "messages": MSGS, "logprobs": True}, "logprobs"),
}

COMPLETION_CASES = {
    "missing prompt": case(400, {"model": "M"}, "prompt"),
    "empty prompt": case(400, {"model": "M", "prompt": ""}, "prompt"),
    "two prompts": case(400, {"model": "M", "prompt": ["a", "b"]}, "prompt"),
    "token out of vocab": case(400, {"model": "M", "prompt": [10**9]}, "prompt"),
    "negative token": case(400, {"model": "M", "prompt": [-1]}, "prompt[0]"),
}


def post(server, path, body, raw):
    url = server.base_url + path
    if raw is not None:
        return httpx.post(url, content=raw, headers={"Content-Type": "application/json"})
    if body is not None and body.get("model") == "M":
        body = {**body, "model": server.model}
    return httpx.post(url, json=body)


def check(response, status, param):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error


@pytest.mark.parametrize("name", CHAT_CASES)
def test_bad_chat_request(tiny_server, name):
    status, body, param, raw = CHAT_CASES[name]
    check(post(tiny_server, "/chat/completions", body, raw), status, param)


@pytest.mark.parametrize("name", COMPLETION_CASES)
def test_bad_completion_request(tiny_server, name):
    status, body, param, raw = COMPLETION_CASES[name]
    check(post(tiny_server, "/completions", body, raw), status, param)


def test_unknown_route_and_method(tiny_server):
    check(httpx.get(tiny_server.url + "/v1/nothing"), 404, None)
    check(httpx.get(tiny_server.base_url + "/chat/completions"), 405, None)


@pytest.fixture(scope="module")
def narrow_server(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), max_batch_size=1, max_queue=1))
    yield server
    server.stop()


def long_request(server, results, **extra):
    body = {"model": server.model, "messages": chat("a", "b"), "max_tokens": 400, "ignore_eos": True, **extra}
    results.append(httpx.post(server.base_url + "/chat/completions", json=body, timeout=60))


def test_full_queue_is_429_in_openai_shape(narrow_server):
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=long_request, args=(narrow_server, results)) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    rejected = next(r for r in results if r.status_code == 429)
    check(rejected, 429, None)
    assert rejected.json()["error"]["code"] == "rate_limit_exceeded"


def wait_idle(server, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.engine.has_unfinished():
            return True
        time.sleep(0.02)
    return False


def test_streaming_disconnect_aborts_generation(narrow_server):
    body = {"model": narrow_server.model, "messages": chat("a", "b"), "max_tokens": 1500,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", narrow_server.base_url + "/chat/completions", json=body) as r:
        lines = r.iter_lines()
        next(lines)
        next(lines)
        assert narrow_server.engine.has_unfinished()
    assert wait_idle(narrow_server)


def test_non_streaming_disconnect_aborts_generation(narrow_server):
    body = {"model": narrow_server.model, "messages": chat("a", "b"), "max_tokens": 1500, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(narrow_server.base_url + "/chat/completions", json=body, timeout=0.5)
    assert wait_idle(narrow_server)
