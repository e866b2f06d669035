"""The engine loop's failure path, on the real tiny engine with faults on cue: no uvicorn.

A step that raises fails every request in flight (503 `engine_failure`, or an error event when
the stream has started), names nothing but the request id, and the loop goes on to serve the
next request. A request the engine fails alone (finish_reason "error") is a 500 for it only.
Shutdown fails what is in flight, once, and stops the thread. The per-tenant limit is counted
here too (`max_per_tenant`).

The tokens are the real engine's; only the faults are scripted (a real step cannot be made to
fail on cue), one action per step; tests wait on the wrapper's events, never on time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque

import httpx
import pytest

from promptcache.engine.api import CacheOptions, EngineInputError, Request, RequestOutput, SamplingParams
from promptcache.server.app import create_app, engine_from_settings
from promptcache.server.engine_loop import EngineFailure, EngineLoop, QueueFullError, TenantLimitError
from promptcache.server.settings import ServerSettings

SECRET = "/very/secret/path.py KeyError"  # what a fault says; no client may ever see it


class Faulty:
    """The real engine, stepped through a script: each step takes the next action of `script`
    ("token" when it runs out): "token" is a real step (more, until every active request has
    had an output), "raise" raises instead, "fail:first" is "token" after which the oldest
    active request is aborted and reported failed alone (finish_reason "error"), "freeze" stops stepping (has_unfinished turns False) until a new
    request comes. No step runs before `start_after` requests came. Everything else is the
    engine's own."""

    def __init__(self, engine, script=(), start_after: int = 0):
        self.engine = engine
        self.script = deque(script)
        self.frozen = start_after > 0
        self.start_after = start_after
        self.active: list[str] = []  # request ids taken in and not finished, oldest first
        self.aborted: list[str] = []
        self.stepped = threading.Semaphore(0)  # released once per step that produced outputs
        self.froze = threading.Semaphore(0)  # released once per "freeze" step
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def add_request(self, request: Request) -> None:
        self.engine.add_request(request)
        with self._lock:
            self.active.append(request.request_id)
            self.frozen = len(self.active) + len(self.aborted) < self.start_after

    def abort_request(self, request_id: str) -> None:
        self.engine.abort_request(request_id)
        with self._lock:
            if request_id in self.active:
                self.active.remove(request_id)
                self.aborted.append(request_id)

    def has_unfinished(self) -> bool:
        return not self.frozen and self.engine.has_unfinished()

    def _real_steps(self) -> list[RequestOutput]:
        """Real steps until every active request has had an output (a prefill may come first)."""
        outputs, waiting = [], set(self.active)
        while True:
            got = self.engine.step()
            outputs += got
            waiting -= {o.request_id for o in got}
            if not waiting or not self.engine.has_unfinished():
                return outputs

    def step(self) -> list[RequestOutput]:
        action = self.script.popleft() if self.script else "token"
        if action == "raise":
            raise RuntimeError(SECRET)
        if action == "freeze":
            self.frozen = True
            self.froze.release()
            return []
        outputs = self._real_steps()
        if action == "fail:first" and self.active:
            victim = self.active[0]
            self.engine.abort_request(victim)
            outputs = [o for o in outputs if o.request_id != victim]
            outputs.append(RequestOutput(victim, "", [], True, "error", 3, 0, 0,
                                         error="the engine failed while sampling this request"))
        with self._lock:
            self.active = [r for r in self.active if not any(o.request_id == r and o.finished for o in outputs)]
        if outputs:
            self.stepped.release()
        return outputs


@pytest.fixture(scope="module")
def shared_engine(tiny_llama_dir):
    return engine_from_settings(ServerSettings(model=str(tiny_llama_dir)))


@pytest.fixture
def engine(shared_engine):
    """The module's real engine, idle again after each test: what a test left queued (the
    admission tests step nothing) is served to its end, aborted requests are dropped."""
    yield shared_engine
    while shared_engine.has_unfinished():
        shared_engine.step()


def request(request_id: str, max_tokens: int = 3, tenant: str = "default") -> Request:
    return Request(request_id, [1, 2, 3], SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   CacheOptions(tenant=tenant))


def tokens_of(items: list) -> list[int]:
    return [t for i in items if isinstance(i, RequestOutput) for t in i.new_token_ids]


async def clean_run(loop, max_tokens: int = 3) -> list[int]:
    """The real engine's tokens for `request` with no fault: what a served request must get."""
    items = await drain(loop.submit(request(f"clean-{max_tokens}", max_tokens)).queue)
    assert items[-1].finish_reason == "length" and len(tokens_of(items)) == max_tokens
    return tokens_of(items)


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

def test_a_step_that_raises_fails_every_request_in_flight_once_and_the_loop_goes_on(engine):
    faulty = Faulty(engine, ["token", "raise"], start_after=3)

    @with_loop(faulty)
    async def _(loop):
        subs = [loop.submit(request(f"r{i}", max_tokens=50)) for i in range(3)]
        results = [await drain(s.queue) for s in subs]
        for items in results:  # tokens, then the failure
            assert isinstance(items[-1], EngineFailure) and SECRET not in str(items[-1])
            assert items[:-1] and all(isinstance(i, RequestOutput) and not i.finished for i in items[:-1])
        assert loop.in_flight == 0
        # the engine is told to drop them, and nothing more arrives for them
        assert all(s.queue.empty() for s in subs)
        assert sorted(faulty.aborted) == ["r0", "r1", "r2"]
        # the loop recovers: the next request is served to the end, as a clean run serves it
        items = await drain(loop.submit(request("next", max_tokens=3)).queue)
        assert items[-1].finish_reason == "length" and tokens_of(items) == await clean_run(loop)


def test_a_request_failed_by_the_engine_ends_alone(engine):
    faulty = Faulty(engine, ["freeze", "fail:first"])

    @with_loop(faulty)
    async def _(loop):
        bad = loop.submit(request("bad", 5))
        await wait_for(faulty.froze)
        good = loop.submit(request("good", 5))
        bad_items, good_items = await drain(bad.queue), await drain(good.queue)
        assert bad_items[-1].finish_reason == "error" and bad_items[-1].error
        assert tokens_of(good_items) == await clean_run(loop, 5)


def test_shutdown_fails_in_flight_requests_once_and_stops_the_thread(engine):
    faulty = Faulty(engine, ["token", "freeze"])

    async def main():
        loop = EngineLoop(faulty, max_queue=8)
        loop.start()
        sub = loop.submit(request("long", 1000))
        first = await asyncio.wait_for(sub.queue.get(), 10)
        assert len(first.new_token_ids) == 1
        await wait_for(faulty.froze)
        await asyncio.to_thread(loop.stop)
        failure = await asyncio.wait_for(sub.queue.get(), 10)
        assert isinstance(failure, EngineFailure) and "shutting down" in str(failure)
        await asyncio.sleep(0)  # let anything else scheduled land (nothing may)
        assert sub.queue.empty() and loop.in_flight == 0 and loop._thread is None
        assert faulty.aborted == ["long"]
        loop.stop()  # a second stop is harmless

    asyncio.run(main())


def test_outputs_for_requests_no_longer_in_flight_are_dropped(engine):
    loop = EngineLoop(engine, max_queue=8)

    async def main():
        sub = loop.submit(request("r"))
        loop.abort("r")
        loop._dispatch([RequestOutput("r", "x", [1], False, None, 3, 0, 1),
                        RequestOutput("ghost", "x", [1], True, "length", 3, 0, 1)])
        await asyncio.sleep(0)
        assert sub.queue.empty() and loop.in_flight == 0

    asyncio.run(main())


def test_the_clock_is_injected(engine):
    loop = EngineLoop(engine, max_queue=8, clock=lambda: 123.5)

    async def main():
        assert loop.submit(request("r")).submitted_at == 123.5

    asyncio.run(main())


# -- admission limits ---------------------------------------------------------------------------

def test_a_full_queue_refuses_everyone(engine):
    loop = EngineLoop(engine, max_queue=2)

    async def main():
        loop.submit(request("a", tenant="A"))
        loop.submit(request("b", tenant="B"))
        with pytest.raises(QueueFullError):
            loop.submit(request("c", tenant="C"))
        assert engine.num_waiting() == 2  # the refused one never reached the engine

    asyncio.run(main())


def test_the_tenant_limit_counts_queued_and_running_requests_of_that_tenant_only(engine):
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


# -- over HTTP (the app on the engine with faults; ASGI in process, no uvicorn) -----------------

def serve(engine, test, **settings):
    """Run `test(client, state)` against the app with these settings, its engine loop started by hand."""
    app = create_app(engine, ServerSettings(model=engine.model_name, **settings))
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


def body(engine, max_tokens: int = 3, stream: bool = False) -> dict:
    return {"model": engine.model_name, "prompt": [1, 2, 3], "max_tokens": max_tokens, "stream": stream,
            "temperature": 0, "ignore_eos": True}


async def clean_text(client, engine, max_tokens: int) -> str:
    """The reply with no fault: what a served request must get."""
    reply = await client.post("/v1/completions", json=body(engine, max_tokens))
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] == "length"
    return reply.json()["choices"][0]["text"]


def sse_events(text: str) -> list:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def check_engine_failure(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "engine_failure")
    assert response.headers["x-request-id"] in error["message"]
    assert SECRET not in response.text and "RuntimeError" not in response.text


def test_http_step_failure_is_503_then_the_next_request_is_served(engine):
    async def test(client, state):
        check_engine_failure(await client.post("/v1/completions", json=body(engine)), 503)
        ok = await client.post("/v1/completions", json=body(engine))
        assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == await clean_text(client, engine, 3)

    serve(Faulty(engine, ["raise"]), test)


def test_http_request_failed_alone_is_500_and_the_other_succeeds(engine):
    async def test(client, state):
        bad = asyncio.create_task(client.post("/v1/completions", json=body(engine, 5)))
        await wait_for(state.engine.froze)  # the first is taken in, and the engine holds it
        good = asyncio.create_task(client.post("/v1/completions", json=body(engine, 5)))
        check_engine_failure(await bad, 500)
        assert (await good).json()["choices"][0]["text"] == await clean_text(client, engine, 5)

    serve(Faulty(engine, ["freeze", "fail:first"]), test)


def test_http_step_failure_mid_stream_is_an_error_event_then_done(engine):
    async def test(client, state):
        response = await client.post("/v1/completions", json=body(engine, 50, stream=True))
        assert response.status_code == 200
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        clean = await clean_text(client, engine, 1)
        assert chunks[0]["choices"][0]["text"] == clean and clean  # tokens went out before the fault
        error = chunks[-1]["error"]
        assert (error["type"], error["code"]) == ("server_error", "engine_failure")
        assert response.headers["x-request-id"] in error["message"] and SECRET not in response.text
        again = await client.post("/v1/completions", json=body(engine, 2, stream=True))
        assert sse_events(again.text)[-1] == "[DONE]" and "error" not in again.text

    serve(Faulty(engine, ["token", "raise"]), test)


def test_http_shutdown_fails_the_request_in_flight_cleanly(engine):
    async def test(client, state):
        pending = asyncio.create_task(client.post("/v1/completions", json=body(engine, 1000)))
        await wait_for(state.engine.froze)  # it has a token, and the engine is now frozen
        await asyncio.to_thread(state.loop.stop)
        check_engine_failure(await pending, 503)

    serve(Faulty(engine, ["token", "freeze"]), test)
