"""Bad input is a 4xx in OpenAI's error shape, never a 500; a full queue is a 429; a client
that goes away stops its generation."""

from __future__ import annotations

import json
import socket
import threading

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
    "n past the cap": case(400, {"model": "M", "messages": MSGS, "n": 17}, "n"),
    "over the context": case(400, {"model": "M", "messages": MSGS, "max_tokens": 10**7}, "max_tokens"),
    "stop wrong type": case(400, {"model": "M", "messages": MSGS, "stop": 7}, "stop"),
    "stream not bool": case(400, {"model": "M", "messages": MSGS, "stream": "maybe"}, "stream"),
    "bad retention": case(400, {"model": "M", "messages": MSGS, "prompt_cache_retention": "1y"}, "prompt_cache_retention"),
    "lone surrogate": case(400, None, "messages[0].content", b'{"model": "M", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    "seed too big": case(400, {"model": "M", "messages": MSGS, "seed": 2**70}, "seed"),
    "top_logprobs past 20": case(400, {"model": "M", "messages": MSGS, "logprobs": True, "top_logprobs": 21},
                                 "top_logprobs"),
}

COMPLETION_CASES = {
    "missing prompt": case(400, {"model": "M"}, "prompt"),
    "empty prompt": case(400, {"model": "M", "prompt": ""}, "prompt"),
    "too many choices": case(400, {"model": "M", "prompt": ["a", "b"], "n": 9}, "n"),
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


class EngineEvents:
    """Events set from the engine's own calls, so that tests wait on what happened rather
    than sleeping and hoping: a request was queued; a step left the engine idle. With `hold`
    set, the stepping thread stops after the second step that produced a token (`held`) until
    `release` is set: the running request keeps its slot however fast the model is."""

    def __init__(self, engine, monkeypatch):
        self.added = threading.Semaphore(0)
        self.idle, self.aborted = threading.Event(), threading.Event()
        self.hold, self.held, self.release = threading.Event(), threading.Event(), threading.Event()
        self.tokens = 0  # generated by every step since
        real_add, real_step, real_abort = engine.add_request, engine.step, engine.abort_request

        def add_request(request):
            real_add(request)
            self.added.release()

        def abort_request(request_id):
            real_abort(request_id)
            self.aborted.set()

        produced = [0]  # steps that produced a token while `hold` was set

        def step():
            outputs = real_step()
            self.tokens += sum(len(o.new_token_ids) for o in outputs)
            if self.hold.is_set() and any(o.new_token_ids for o in outputs):
                produced[0] += 1
            # Held after the second such step, not the first: the stream's status line and
            # first token go out with the first, so the client is not left waiting for them.
            if self.hold.is_set() and produced[0] >= 2:
                self.hold.clear()
                self.held.set()
                self.release.wait(30)
            if not engine.has_unfinished():
                self.idle.set()
            return outputs

        monkeypatch.setattr(engine, "add_request", add_request)
        monkeypatch.setattr(engine, "abort_request", abort_request)
        monkeypatch.setattr(engine, "step", step)


MAX_TOKENS = 1500  # what a disconnecting client asks for; an abort stops it long before


def stream_until_tokens(server, **extra):
    """Open a streaming request and return once it is generating (a token has arrived)."""
    body = {"model": server.model, "messages": chat("a", "b"), "max_tokens": MAX_TOKENS, "ignore_eos": True,
            "stream": True, **extra}
    return httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=60)


def read_first_token(response) -> None:
    for line in response.iter_lines():
        if '"content":' in line and '"content":""' not in line:
            return
    raise AssertionError("the stream ended before any token")


def test_full_queue_is_429_in_openai_shape(narrow_server, monkeypatch):
    events = EngineEvents(narrow_server.engine, monkeypatch)
    events.hold.set()
    queued: list[httpx.Response] = []
    body = {"model": narrow_server.model, "messages": chat("a", "b"), "max_tokens": 2}
    with stream_until_tokens(narrow_server) as running:  # takes the one batch slot
        assert events.held.wait(30)  # ... and keeps it: the engine is paused after its first token
        waiting = threading.Thread(target=lambda: queued.append(
            httpx.post(narrow_server.base_url + "/chat/completions", json=body, timeout=60)))
        waiting.start()
        assert events.added.acquire(timeout=30) and events.added.acquire(timeout=30)  # both queued
        rejected = httpx.post(narrow_server.base_url + "/chat/completions", json=body)
        events.release.set()
        read_first_token(running)
    waiting.join(timeout=60)
    check(rejected, 429, None)
    assert rejected.json()["error"]["code"] == "rate_limit_exceeded"
    assert [r.status_code for r in queued] == [200]  # the waiting one ran once the slot was free


def check_aborted(server, events: EngineEvents) -> None:
    """The engine was told to drop the request while it was held mid-generation, and went idle
    without generating on (a missed abort would run to MAX_TOKENS)."""
    assert events.aborted.wait(30)
    events.release.set()
    assert events.idle.wait(120)
    assert not server.engine.has_unfinished() and events.tokens < 10


def test_streaming_disconnect_aborts_generation(narrow_server, monkeypatch):
    events = EngineEvents(narrow_server.engine, monkeypatch)
    events.hold.set()
    with stream_until_tokens(narrow_server) as r:
        read_first_token(r)
        assert events.held.wait(30) and narrow_server.engine.has_unfinished()
        events.idle.clear()
    check_aborted(narrow_server, events)


def test_non_streaming_disconnect_aborts_generation(narrow_server, monkeypatch):
    events = EngineEvents(narrow_server.engine, monkeypatch)
    events.hold.set()
    body = json.dumps({"model": narrow_server.model, "messages": chat("a", "b"), "max_tokens": MAX_TOKENS,
                       "ignore_eos": True}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", narrow_server.port), timeout=30) as sock:
        sock.sendall(head + body)
        assert events.held.wait(30)  # generating, and held there: the client goes away now
        events.idle.clear()
    check_aborted(narrow_server, events)
