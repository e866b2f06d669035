"""Limits come before expensive work: the body's size from its headers and while it streams,
the API key before the body is read, counts and lengths before the chat template runs."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest
from live_server import start_server
from server_prompts import ADMIN_KEY, KEYS, chat

from promptcache.server.limits import Limits
from promptcache.server.settings import ServerSettings, build_settings

LIMITS = Limits(max_body_bytes=64 * 1024, max_messages=50, max_content_parts=8, max_tools=4,
                max_tools_bytes=1024, max_stop_chars=16, max_label_chars=32)


@pytest.fixture(scope="module")
def limited_server(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=2, limits=LIMITS))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed_limited_server(tiny_llama_dir, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    settings = build_settings(
        dict(model=str(tiny_llama_dir), admin_key=ADMIN_KEY, max_body_bytes=64 * 1024), keys_file=keys_file
    )
    server = start_server(settings)
    yield server
    server.stop()


def raw_exchange(server, head: str, timeout: float = 10.0) -> bytes:
    """Send only a request head (no body at all) and read the answer: a server that waited for
    the promised body would time out instead of answering."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            answer += sock.recv(65536)
        return answer


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 0


def big_head(server, path: str, extra: str = "") -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {200 * 2**20}\r\n{extra}\r\n")


def test_oversized_body_is_refused_from_its_content_length(limited_server):
    answer = raw_exchange(limited_server, big_head(limited_server, "/v1/chat/completions"))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error"' in answer


def test_missing_key_is_refused_before_a_huge_body_is_read(keyed_limited_server):
    answer = raw_exchange(keyed_limited_server, big_head(keyed_limited_server, "/v1/chat/completions"))
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    wrong = raw_exchange(keyed_limited_server,
                         big_head(keyed_limited_server, "/v1/completions", "Authorization: Bearer nope\r\n"))
    assert wrong.startswith(b"HTTP/1.1 401"), wrong[:200]


def test_streamed_body_is_cut_at_the_limit(limited_server):
    def chunks():  # no Content-Length: sent chunked, 1 MiB in all
        for _ in range(16):
            yield b" " * 65536

    r = httpx.post(limited_server.base_url + "/chat/completions", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error"


def body(server, **extra) -> dict:
    return {"model": server.model, "messages": chat("a", "b"), "max_tokens": 1, **extra}


def msgs(n: int) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(n)]


# name -> (fields replacing the defaults of `body`, expected error.param)
OVER_LIMIT = {
    "messages": ({"messages": msgs(51)}, "messages"),
    "content parts": ({"messages": [{"role": "user", "content": [{"type": "text", "text": "p"}] * 9}]},
                      "messages[0].content"),
    "tools count": ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(5)]}, "tools"),
    "tools bytes": ({"tools": [{"type": "function", "function": {"name": "f", "description": "d" * 2000}}]}, "tools"),
    "stop string": ({"stop": ["s" * 17]}, "stop[0]"),
    "prompt_cache_key": ({"prompt_cache_key": "k" * 33}, "prompt_cache_key"),
    "cache_salt": ({"cache_salt": "s" * 33}, "cache_salt"),
    "user": ({"user": "u" * 33}, "user"),
    "safety_identifier": ({"safety_identifier": "i" * 33}, "safety_identifier"),
}


@pytest.mark.parametrize("name", OVER_LIMIT)
def test_counts_and_lengths_over_the_limit_are_400(limited_server, name):
    fields, param = OVER_LIMIT[name]
    r = httpx.post(limited_server.base_url + "/chat/completions", json=body(limited_server, **fields))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_the_same_fields_at_the_limit_are_served(limited_server):
    fields = dict(messages=msgs(49), stop=["s" * 16], prompt_cache_key="k" * 32, user="u" * 32,
                  tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(4)])
    r = httpx.post(limited_server.base_url + "/chat/completions", json=body(limited_server, **fields),
                   timeout=60)
    assert r.status_code == 200, r.text


def test_completion_labels_are_limited_too(limited_server):
    r = httpx.post(limited_server.base_url + "/completions",
                   json={"model": limited_server.model, "prompt": "hi", "max_tokens": 1, "prompt_cache_key": "k" * 33})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_cache_key"


def test_two_thousand_messages_are_rendered_once_and_refused_for_the_context(tiny_server, monkeypatch):
    renders = []
    tokenizer = tiny_server.engine.tokenizer
    real = tokenizer.apply_chat_template
    monkeypatch.setattr(tokenizer, "apply_chat_template", lambda *a, **k: renders.append(1) or real(*a, **k))
    r = httpx.post(tiny_server.base_url + "/chat/completions", json=body(tiny_server, messages=msgs(2000)), timeout=60)
    assert r.status_code == 400, r.text  # ~10,000 prompt tokens: past the 2,048-token context
    assert "context" in r.json()["error"]["message"]
    assert len(renders) == 1


def test_default_limits_refuse_more_messages_than_allowed_before_rendering(tiny_server, monkeypatch):
    tokenizer = tiny_server.engine.tokenizer
    monkeypatch.setattr(tokenizer, "apply_chat_template", lambda *a, **k: pytest.fail("rendered"))
    r = httpx.post(tiny_server.base_url + "/chat/completions",
                   json=body(tiny_server, messages=msgs(Limits().max_messages + 1)), timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


@pytest.mark.parametrize("values", [{"max_queue": 0}, {"max_messages": 0}, {"max_body_bytes": 10},
                                    {"render_threads": 0}, {"max_batch_size": 0}])
def test_settings_that_would_refuse_everything_are_rejected(values):
    with pytest.raises(ValueError, match="must be"):
        build_settings(values)


class WatchedLimiter:
    """The server's render limiter, telling the test when a render must wait for a thread."""

    def __init__(self, limiter):
        self.limiter, self.waiting = limiter, threading.Semaphore(0)

    async def __aenter__(self):
        if self.limiter.available_tokens < 1:
            self.waiting.release()
        await self.limiter.__aenter__()

    async def __aexit__(self, *exc):
        return await self.limiter.__aexit__(*exc)


def test_rendering_runs_off_the_event_loop_and_bounded(tiny_llama_dir, monkeypatch):
    """A render in progress stalls neither /health nor other requests' event loop, and no more
    than render_threads renders run at once."""
    server = start_server(ServerSettings(model=str(tiny_llama_dir), render_threads=1, default_max_tokens=1))
    tokenizer = server.engine.tokenizer
    real = tokenizer.apply_chat_template
    started, release = threading.Semaphore(0), threading.Event()
    running, most = [0], [0]
    lock = threading.Lock()

    def slow_render(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        started.release()
        release.wait(30)
        with lock:
            running[0] -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "apply_chat_template", slow_render)
    state = server.server.config.app.state.promptcache
    limiter = state.render_limiter = WatchedLimiter(state.render_limiter)
    results: list[int] = []
    post = lambda: results.append(httpx.post(server.base_url + "/chat/completions",  # noqa: E731
                                             json=body(server), timeout=60).status_code)
    threads = [threading.Thread(target=post) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        assert started.acquire(timeout=30)  # one render is blocked inside the template
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        assert limiter.waiting.acquire(timeout=30)  # the second waits for the one render thread
        assert running[0] == 1
        release.set()
        for t in threads:
            t.join(timeout=60)
        assert results == [200, 200] and most[0] == 1
    finally:
        release.set()
        server.stop()
