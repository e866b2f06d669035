"""The engine loop's failure path, with a stub engine: no model, no uvicorn, milliseconds.

A step that raises fails every request in flight (503 `engine_failure`, or an error event when
the stream has started), names nothing but the request id, and the loop goes on to serve the
next request. A request the engine fails alone (finish_reason "error") is a 500 for it only.
Shutdown fails what is in flight, once, and stops the thread. The per-tenant limit is counted
here too (`max_per_tenant`).

The stub follows a script, one action per step; tests wait on its events, never on time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque

import httpx
import pytest

from promptcache.engine.api import CacheOptions, EngineInputError, Request, RequestOutput, SamplingParams
from promptcache.server.app import create_app
from promptcache.server.engine_loop import EngineFailure, EngineLoop, QueueFullError, TenantLimitError
from promptcache.server.settings import ServerSettings

SECRET = "/very/secret/path.py KeyError"  # what a fault says; no client may ever see it


class StubTokenizer:
    bos_token_id = None
    eos_token_ids = ()

    def encode(self, text, add_special_tokens=True):
        return [1 + ord(c) % 50 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(f"t{i} " for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tools=None):
        return "".join(str(m["content"]) for m in messages)


class StubEngine:
    """Engine's surface as the loop and the server use it. Each step takes the next action of
    `script` ("token" when it runs out): "token" gives every active request its next token,
    "raise" raises, "fail:<id>" finishes that request with finish_reason "error" ("fail:first":
    the oldest active one) and the others get their token, "freeze" stops stepping
    (has_unfinished turns False) until a new request or `thaw()`."""

    model_name = "stub-model"
    context_length = 4096

    def __init__(self, script=()):
        self.tokenizer = StubTokenizer()
        self.script = deque(script)
        self.frozen = False
        self.active: dict[str, list] = {}  # request id -> [request, tokens so far]
        self.inbox: list[Request] = []
        self.aborts: set[str] = set()
        self.aborted: list[str] = []
        self.added = threading.Semaphore(0)  # released once per add_request
        self.stepped = threading.Semaphore(0)  # released once per step that produced outputs
        self.froze = threading.Semaphore(0)  # released once per "freeze" step
        self._lock = threading.Lock()

    # -- what the loop and the routes call --
    def add_request(self, request: Request) -> None:
        request.sampling.validate()
        if not request.prompt_tokens:
            raise EngineInputError("the prompt is empty", "prompt")
        with self._lock:
            self.inbox.append(request)
        self.added.release()

    def abort_request(self, request_id: str) -> None:
        with self._lock:
            self.aborts.add(request_id)

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self.inbox or self.aborts or (self.active and not self.frozen))

    def num_waiting(self) -> int:
        with self._lock:
            return len(self.inbox)

    def num_running(self) -> int:
        with self._lock:
            return len(self.active)

    def cache_stats(self, wait: bool = True) -> dict:
        return {"enabled": False}

    def thaw(self) -> None:
        with self._lock:
            self.frozen = False

    def step(self) -> list[RequestOutput]:
        with self._lock:
            for request in self.inbox:
                self.active[request.request_id] = [request, 0]
            self.inbox = []
            for request_id in self.aborts:
                if self.active.pop(request_id, None) is not None:
                    self.aborted.append(request_id)
            self.aborts = set()
            action = self.script.popleft() if self.script else "token"
            if action == "raise":
                raise RuntimeError(SECRET)
            if action == "freeze":
                self.frozen = True
                self.froze.release()
                return []
            self.frozen = False
            if action == "fail:first" and self.active:
                action = f"fail:{next(iter(self.active))}"
            outputs = []
            for request_id, entry in list(self.active.items()):
                request, n = entry
                if action == f"fail:{request_id}":
                    del self.active[request_id]
                    outputs.append(RequestOutput(request_id, "", [], True, "error", 3, 0, n,
                                                 error="the engine failed while sampling this request"))
                    continue
                entry[1] = n = n + 1
                done = n >= request.sampling.max_tokens
                if done:
                    del self.active[request_id]
                outputs.append(RequestOutput(request_id, f"t{n} ", [n], done, "length" if done else None, 3, 0, n))
        if outputs:
            self.stepped.release()
        return outputs


def request(request_id: str, max_tokens: int = 3, tenant: str = "default") -> Request:
    return Request(request_id, [1, 2, 3], SamplingParams(max_tokens=max_tokens), CacheOptions(tenant=tenant))


async def drain(queue: asyncio.Queue) -> list:
    """Items until the request ends (finished output or a failure)."""
    items = []
    while True:
        item = await asyncio.wait_for(queue.get(), 10)
        items.append(item)
        if isinstance(item, EngineFailure) or item.finished:
            return items


async def wait_for(semaphore: threading.Semaphore, times: int = 1) -> None:
    for _ in range(times):
        assert await asyncio.to_thread(semaphore.acquire, True, 10)


def with_loop(engine, **kwargs):
    """Run `body(loop)` in a fresh event loop with the engine loop started, stopped after."""
    def decorator(body):
        async def main():
            loop = EngineLoop(engine, **{"max_queue": 8, **kwargs})
            loop.start()
            try:
                await body(loop)
            finally:
                await asyncio.to_thread(loop.stop)
        asyncio.run(main())
    return decorator


# -- the loop itself ----------------------------------------------------------------------------

def test_a_step_that_raises_fails_every_request_in_flight_once_and_the_loop_goes_on():
    engine = StubEngine(["token", "raise"])

    @with_loop(engine)
    async def _(loop):
        subs = [loop.submit(request(f"r{i}", max_tokens=50)) for i in range(3)]
        results = [await drain(s.queue) for s in subs]
        for items in results:
            assert [type(i) for i in items] == [RequestOutput, EngineFailure]
            assert SECRET not in str(items[-1])
        assert loop.in_flight == 0
        # the engine is told to drop them, and nothing more arrives for them
        assert all(s.queue.empty() for s in subs)
        # the loop recovers: the next request is served to the end
        items = await drain(loop.submit(request("next", max_tokens=3)).queue)
        assert [i.new_token_ids for i in items] == [[1], [2], [3]] and items[-1].finish_reason == "length"
    assert sorted(engine.aborts | set(engine.aborted)) == ["r0", "r1", "r2"]


def test_a_request_failed_by_the_engine_ends_alone():
    engine = StubEngine(["token", "fail:bad"])

    @with_loop(engine)
    async def _(loop):
        bad, good = loop.submit(request("bad", 5)), loop.submit(request("good", 5))
        bad_items, good_items = await drain(bad.queue), await drain(good.queue)
        assert bad_items[-1].finish_reason == "error" and bad_items[-1].error
        assert [i.new_token_ids for i in good_items] == [[1], [2], [3], [4], [5]]


def test_shutdown_fails_in_flight_requests_once_and_stops_the_thread():
    engine = StubEngine(["token", "freeze"])

    async def main():
        loop = EngineLoop(engine, max_queue=8)
        loop.start()
        sub = loop.submit(request("long", 1000))
        first = await asyncio.wait_for(sub.queue.get(), 10)
        assert first.new_token_ids == [1]
        await wait_for(engine.stepped)
        await asyncio.to_thread(loop.stop)
        failure = await asyncio.wait_for(sub.queue.get(), 10)
        assert isinstance(failure, EngineFailure) and "shutting down" in str(failure)
        await asyncio.sleep(0)  # let anything else scheduled land (nothing may)
        assert sub.queue.empty() and loop.in_flight == 0 and loop._thread is None
        assert "long" in engine.aborts
        loop.stop()  # a second stop is harmless

    asyncio.run(main())


def test_outputs_for_requests_no_longer_in_flight_are_dropped():
    loop = EngineLoop(StubEngine(), max_queue=8)

    async def main():
        sub = loop.submit(request("r"))
        loop.abort("r")
        loop._dispatch([RequestOutput("r", "x", [1], False, None, 3, 0, 1),
                        RequestOutput("ghost", "x", [1], True, "length", 3, 0, 1)])
        await asyncio.sleep(0)
        assert sub.queue.empty() and loop.in_flight == 0

    asyncio.run(main())


def test_the_clock_is_injected():
    loop = EngineLoop(StubEngine(), max_queue=8, clock=lambda: 123.5)

    async def main():
        assert loop.submit(request("r")).submitted_at == 123.5

    asyncio.run(main())


# -- admission limits ---------------------------------------------------------------------------

def test_a_full_queue_refuses_everyone():
    engine = StubEngine()
    loop = EngineLoop(engine, max_queue=2)

    async def main():
        loop.submit(request("a", tenant="A"))
        loop.submit(request("b", tenant="B"))
        with pytest.raises(QueueFullError):
            loop.submit(request("c", tenant="C"))

    asyncio.run(main())


def test_the_tenant_limit_counts_queued_and_running_requests_of_that_tenant_only():
    engine = StubEngine()
    loop = EngineLoop(engine, max_queue=100, max_per_tenant=2)

    async def main():
        loop.submit(request("a1", tenant="A"))
        loop.submit(request("a2", tenant="A"))
        with pytest.raises(TenantLimitError) as err:
            loop.submit(request("a3", tenant="A"))
        assert (err.value.tenant, err.value.limit) == ("A", 2) and err.value.retry_after_s >= 1
        assert isinstance(err.value, QueueFullError)
        loop.submit(request("b1", tenant="B"))  # another tenant is not affected
        assert (loop.in_flight_of("A"), loop.in_flight_of("B")) == (2, 1)
        # a finished request makes room; so does an abort; a refused input leaves no trace
        loop._dispatch([RequestOutput("a1", "", [1], True, "length", 3, 0, 1)])
        loop.submit(request("a3", tenant="A"))
        loop.abort("a2")
        with pytest.raises(EngineInputError):
            loop.submit(Request("empty", [], SamplingParams(), CacheOptions(tenant="A")))
        assert loop.in_flight_of("A") == 1
        loop.submit(request("a4", tenant="A"))
        loop._fail_all(EngineFailure("the engine failed"))
        assert loop.in_flight_of("A") == loop.in_flight_of("B") == loop.in_flight == 0

    asyncio.run(main())


# -- over HTTP (the app with the stub; ASGI in process, no uvicorn) ------------------------------

def serve(engine, test, **settings):
    """Run `test(client, state)` against the app, its engine loop started by hand."""
    app = create_app(engine, ServerSettings(**settings))
    state = app.state.promptcache

    async def main():
        state.loop.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                await test(client, state)
        finally:
            await asyncio.to_thread(state.loop.stop)

    asyncio.run(main())


def body(max_tokens: int = 3, stream: bool = False) -> dict:
    return {"model": StubEngine.model_name, "prompt": [1, 2, 3], "max_tokens": max_tokens, "stream": stream}


def sse_events(text: str) -> list:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def check_engine_failure(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "engine_failure")
    assert response.headers["x-request-id"] in error["message"]
    assert SECRET not in response.text and "RuntimeError" not in response.text


def test_http_step_failure_is_503_then_the_next_request_is_served():
    async def test(client, state):
        check_engine_failure(await client.post("/v1/completions", json=body()), 503)
        ok = await client.post("/v1/completions", json=body())
        assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == "t1 t2 t3 "

    serve(StubEngine(["raise"]), test)


def test_http_request_failed_alone_is_500_and_the_other_succeeds():
    async def test(client, state):
        bad = asyncio.create_task(client.post("/v1/completions", json=body(5)))
        await wait_for(state.engine.froze)  # the first is taken in, and the engine holds it
        good = asyncio.create_task(client.post("/v1/completions", json=body(5)))
        check_engine_failure(await bad, 500)
        assert (await good).json()["choices"][0]["text"] == "t1 t2 t3 t4 t5 "

    serve(StubEngine(["freeze", "fail:first"]), test)


def test_http_step_failure_mid_stream_is_an_error_event_then_done():
    async def test(client, state):
        response = await client.post("/v1/completions", json=body(50, stream=True))
        assert response.status_code == 200
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[0]["choices"][0]["text"] == "t1 "  # tokens went out before the fault
        error = chunks[-1]["error"]
        assert (error["type"], error["code"]) == ("server_error", "engine_failure")
        assert response.headers["x-request-id"] in error["message"] and SECRET not in response.text
        again = await client.post("/v1/completions", json=body(2, stream=True))
        assert sse_events(again.text)[-1] == "[DONE]" and "error" not in again.text

    serve(StubEngine(["token", "raise"]), test)


def test_http_shutdown_fails_the_request_in_flight_cleanly():
    async def test(client, state):
        pending = asyncio.create_task(client.post("/v1/completions", json=body(1000)))
        await wait_for(state.engine.stepped)  # it has a token, and the engine is now frozen
        await asyncio.to_thread(state.loop.stop)
        check_engine_failure(await pending, 503)

    serve(StubEngine(["token", "freeze"]), test)
