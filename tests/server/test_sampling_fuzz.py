"""Sampling parameters through the live server: extreme and malformed values never give a 5xx,
valid ones succeed, invalid ones get a 400 naming the parameter, and a greedy request running
beside them all the while gets the same reply every time (issue 17: a 1e-40 temperature used to
fail every request in flight). Tiny model, a few tokens per request."""

from __future__ import annotations

import json
import math
import threading

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import start_server

from promptcache.server.settings import ServerSettings

DEFAULT_MAX_TOKENS = 4
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NAN, INF = float("nan"), float("inf")
GREEDY = {"messages": [{"role": "user", "content": "Count to ten, slowly."}], "max_tokens": 8,
          "temperature": 0, "ignore_eos": True}
FUZZ_MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=DEFAULT_MAX_TOKENS))
    yield server
    server.stop()


def post(server, endpoint: str, fields: dict, client: httpx.Client | None = None) -> httpx.Response:
    """POST with the fields as given: NaN and infinities go out as the bare JSON tokens some
    clients send (NaN, Infinity), which the server must refuse, not choke on."""
    body = {"model": server.model, **fields}
    if endpoint == "chat":
        body.setdefault("messages", FUZZ_MESSAGES)
        path = "/chat/completions"
    else:
        body.setdefault("prompt", "Say something.")
        path = "/completions"
    raw = json.dumps(body, allow_nan=True)
    send = client.post if client is not None else httpx.post
    return send(server.base_url + path, content=raw, headers={"Content-Type": "application/json"}, timeout=120)


def reply_text(response: httpx.Response) -> str:
    choice = response.json()["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def invalid_params(fields: dict, room: int) -> set[str]:
    """The parameters the server must refuse (room: tokens the context leaves after the prompt)."""
    bad = set()

    def real(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    t = fields.get("temperature")
    if t is not None and not (real(t) and 0 <= t <= 2):
        bad.add("temperature")
    p = fields.get("top_p")
    if p is not None and not (real(p) and 0 <= p <= 1):
        bad.add("top_p")
    k = fields.get("top_k")
    if k is not None and not (isinstance(k, int) and k >= 0):
        bad.add("top_k")
    s = fields.get("seed")
    if s is not None and not (isinstance(s, int) and INT64_MIN <= s <= INT64_MAX):
        bad.add("seed")
    m = fields.get("max_tokens")
    if m is not None and not (isinstance(m, int) and 1 <= m <= room):
        bad.add("max_tokens")
    return bad


def check(response: httpx.Response, fields: dict, room: int) -> None:
    assert response.status_code < 500, (fields, response.text)
    bad = invalid_params(fields, room)
    if bad:
        assert response.status_code == 400, (fields, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] in bad, (fields, error)
        return
    assert response.status_code == 200, (fields, response.text)
    out = response.json()
    limit = fields.get("max_tokens") or DEFAULT_MAX_TOKENS
    assert 1 <= out["usage"]["completion_tokens"] <= limit or out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["finish_reason"] in ("stop", "length")


def floats_around(edge_cases: list[float]):
    return st.one_of(st.sampled_from(edge_cases), st.floats(allow_nan=True, allow_infinity=True),
                     st.floats(-3, 3), st.integers(-(10**30), 10**30), st.none())


TEMPERATURES = [0.0, -0.0, 5e-324, 1e-320, 1e-40, 1e-6, 9.99e-6, 1e-5, 1.0000001e-5, 0.5, 2.0, 2.0000000001,
                1e308, -5e-324, -1e-40, -1.0, NAN, INF, -INF]
TOP_PS = [0.0, 5e-324, 1e-40, 1e-6, 0.5, 1.0, 1.0000001, 1e308, -5e-324, -0.5, NAN, INF, -INF]
INTS = [0, 1, 2, 7, -1, -(2**31), 2**31, 2**53 + 1, INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1,
        10**30, -(10**30)]

SAMPLING = st.fixed_dictionaries({}, optional={
    "temperature": floats_around(TEMPERATURES),
    "top_p": floats_around(TOP_PS),
    "top_k": st.one_of(st.sampled_from(INTS), st.integers(-5, 60_000), st.sampled_from([NAN, INF])),
    "seed": st.one_of(st.sampled_from(INTS), st.integers(), st.sampled_from([NAN, -INF])),
    "max_tokens": st.one_of(st.integers(-3, 6), st.sampled_from([10**7, INT64_MAX, 10**30, -(10**30), NAN])),
})

# name -> (fields, expected status, expected param)
CASES = {
    "subnormal temperature is greedy": ({"temperature": 5e-324}, 200, None),
    "tiny temperature is greedy": ({"temperature": 1e-40}, 200, None),
    "smallest sampled temperature": ({"temperature": 1e-5, "seed": 1}, 200, None),
    "huge temperature": ({"temperature": 1e308}, 400, "temperature"),
    "negative temperature": ({"temperature": -1e-40}, 400, "temperature"),
    "NaN temperature": ({"temperature": NAN}, 400, "temperature"),
    "infinite temperature": ({"temperature": INF}, 400, "temperature"),
    "subnormal top_p": ({"top_p": 5e-324, "temperature": 1.0}, 200, None),
    "NaN top_p": ({"top_p": NAN}, 400, "top_p"),
    "huge top_k": ({"top_k": 10**30, "temperature": 1.0}, 200, None),
    "negative top_k": ({"top_k": -1}, 400, "top_k"),
    "NaN top_k": ({"top_k": NAN}, 400, "top_k"),
    "negative seed": ({"seed": -1, "temperature": 1.0}, 200, None),
    "seed past int64": ({"seed": INT64_MAX + 1, "temperature": 1.0}, 400, "seed"),
    "huge max_tokens": ({"max_tokens": 10**30}, 400, "max_tokens"),
    "max_tokens past int64": ({"max_tokens": INT64_MAX + 1}, 400, "max_tokens"),
    "NaN max_tokens": ({"max_tokens": NAN}, 400, "max_tokens"),
    "everything at its edge": ({"temperature": 2.0, "top_p": 5e-324, "top_k": 1, "seed": INT64_MIN,
                                "max_tokens": 1}, 200, None),
}


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("name", CASES)
def test_sampling_edge_cases(server, name, endpoint):
    fields, status, param = CASES[name]
    response = post(server, endpoint, fields)
    assert response.status_code == status, response.text
    if param is not None:
        assert response.json()["error"]["param"] == param


class GreedyNeighbour:
    """Sends the same greedy request over and over from another thread while the fuzz runs;
    every reply must be the one it got alone before the fuzz began."""

    def __init__(self, server):
        self.server = server
        self.alone = reply_text(post(server, "chat", GREEDY))
        self.replies: list[str] = []
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self.stop.is_set():
                response = post(self.server, "chat", GREEDY, client)
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.replies.append(reply_text(response))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=120)


def test_no_sampling_parameters_give_a_5xx_or_change_a_neighbour(server):
    room = server.engine.context_length - 16  # the fuzz prompts are a few tokens long

    with GreedyNeighbour(server) as neighbour, httpx.Client() as client:
        @given(fields=SAMPLING, endpoint=st.sampled_from(["chat", "completions"]))
        @settings(max_examples=80, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        def fuzz(fields, endpoint):
            check(post(server, endpoint, fields, client), fields, room)

        fuzz()
    assert neighbour.statuses and set(neighbour.statuses) == {200}
    assert neighbour.replies and set(neighbour.replies) == {neighbour.alone}
