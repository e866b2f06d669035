"""Sampling parameters through the live server, in every dialect: extreme and malformed values
never give a 5xx, valid ones succeed, invalid ones get a 400 (naming the parameter where the
dialect's shape has one), and a greedy request running beside them all the while gets the same
reply every time. Issue 17: a 1e-40 temperature used to fail every request in flight; issue 25:
a Gemini seed of 2**64 did, raised where the engine took the request in. Tiny model, a few
tokens per request."""

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


def request_of(server, dialect: str, fields: dict) -> tuple[str, dict]:
    """The path and body of a request in `dialect` carrying `fields` (the dialect's own names)."""
    if dialect == "chat":
        return "/v1/chat/completions", {"model": server.model, "messages": FUZZ_MESSAGES, **fields}
    if dialect == "completions":
        return "/v1/completions", {"model": server.model, "prompt": "Say something.", **fields}
    if dialect == "responses":
        return "/v1/responses", {"model": server.model, "input": "Say something.", "store": False, **fields}
    if dialect == "messages":
        return "/v1/messages", {"model": server.model, "messages": FUZZ_MESSAGES, "max_tokens": DEFAULT_MAX_TOKENS,
                                **fields}
    return f"/v1beta/models/{server.model}:generateContent", {
        "contents": [{"role": "user", "parts": [{"text": "Say something."}]}], "generationConfig": fields}


def post(server, dialect: str, fields: dict, client: httpx.Client | None = None) -> httpx.Response:
    """POST with the fields as given: NaN and infinities go out as the bare JSON tokens some
    clients send (NaN, Infinity), which the server must refuse, not choke on."""
    path, body = request_of(server, dialect, fields)
    raw = json.dumps(body, allow_nan=True)
    send = client.post if client is not None else httpx.post
    return send(server.url + path, content=raw, headers={"Content-Type": "application/json"}, timeout=120)


def reply_text(response: httpx.Response) -> str:
    choice = response.json()["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


# Each dialect's sampling fields: the neutral name -> the dialect's.
OPENAI = {name: name for name in ("temperature", "top_p", "top_k", "seed", "max_tokens", "presence_penalty",
                                  "frequency_penalty", "logit_bias", "repetition_penalty", "min_p")}
NAMES = {
    "chat": OPENAI, "completions": OPENAI,
    "responses": {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_output_tokens"},
    "messages": {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens"},
    "gemini": {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "seed": "seed",
               "max_tokens": "maxOutputTokens", "presence_penalty": "presencePenalty",
               "frequency_penalty": "frequencyPenalty"},
}
DIALECTS = list(NAMES)
SHAPED_PARAM = {"chat", "completions", "responses"}  # the dialects whose error names its param


def real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def within(x, low, high) -> bool:
    return real(x) and low <= x <= high


def valid_logit_bias(value, vocab: int) -> bool:
    return isinstance(value, dict) and len(value) <= 300 and all(
        isinstance(k, str) and (k == "0" or (k.isdigit() and k[0] != "0" and len(k) <= 10)) and int(k) < vocab
        and within(v, -100, 100) for k, v in value.items())


def invalid_params(dialect: str, fields: dict, room: int, vocab: int) -> set[str]:
    """The parameters (neutral names) the server must refuse (room: tokens the context leaves
    after the prompt)."""
    checks = {
        "temperature": lambda t: within(t, 0, 1 if dialect == "messages" else 2),
        "top_p": lambda p: within(p, 0, 1) and (p > 0 or dialect != "gemini"),
        "top_k": lambda k: isinstance(k, int) and k >= 0,
        "seed": lambda s: isinstance(s, int) and INT64_MIN <= s <= INT64_MAX,
        "max_tokens": lambda m: isinstance(m, int) and 1 <= m <= room,
        "presence_penalty": lambda x: within(x, -2, 2),
        "frequency_penalty": lambda x: within(x, -2, 2),
        "repetition_penalty": lambda x: within(x, 0.01, 10),
        "min_p": lambda x: within(x, 0, 1),
        "logit_bias": lambda b: valid_logit_bias(b, vocab),
    }
    return {name for name, value in fields.items() if value is not None and not checks[name](value)}


def dialect_fields(dialect: str, fields: dict) -> dict:
    return {NAMES[dialect][name]: value for name, value in fields.items()}


def check(response: httpx.Response, dialect: str, fields: dict, room: int, vocab: int) -> None:
    """`fields` in neutral names."""
    assert response.status_code < 500, (dialect, fields, response.text)
    bad = invalid_params(dialect, fields, room, vocab)
    if bad:
        assert response.status_code == 400, (dialect, fields, response.text)
        error = response.json()["error"]
        if dialect in SHAPED_PARAM:
            assert error["type"] == "invalid_request_error", (dialect, fields, error)
            assert error["param"] in {NAMES[dialect][name] for name in bad}, (dialect, fields, error)
        elif dialect == "gemini":
            assert error["status"] == "INVALID_ARGUMENT", (fields, error)
        return
    assert response.status_code == 200, (dialect, fields, response.text)
    if dialect not in ("chat", "completions"):
        return
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
        2**64 - 1, 2**64, 10**30, -(10**30)]
PENALTIES = [0.0, -0.0, 2.0, -2.0, 2.0000001, -2.0000001, 5e-324, 1e308, NAN, INF, -INF]
REPETITION_PENALTIES = [1.0, 0.01, 0.0099999, 10.0, 10.000001, 0.0, -1.0, 5e-324, NAN, INF]
MIN_PS = [0.0, -0.0, 1.0, 1.0000001, 5e-324, -5e-324, 0.5, NAN, INF]
VOCAB = 49152  # the tiny model's (SmolLM2's tokenizer)
BIASES = st.one_of(st.integers(-100, 100), st.floats(-100, 100), st.sampled_from([100.5, -101, NAN, INF, True, "1"]))
LOGIT_BIAS = st.one_of(
    st.dictionaries(st.integers(0, VOCAB - 1).map(str), BIASES, max_size=5),
    st.dictionaries(st.sampled_from(["07", "-1", " 1", "1.0", "abc", "", str(VOCAB), str(10**20)]), BIASES,
                    min_size=1, max_size=2),
    st.sampled_from([{}, {str(i): -1 for i in range(300)}, {str(i): -1 for i in range(301)}, [], "x", 5]),
)

NEUTRAL_STRATEGIES = {
    "temperature": floats_around(TEMPERATURES),
    "top_p": floats_around(TOP_PS),
    "top_k": st.one_of(st.sampled_from(INTS), st.integers(-5, 60_000), st.sampled_from([NAN, INF])),
    "seed": st.one_of(st.sampled_from(INTS), st.integers(), st.sampled_from([NAN, -INF])),
    "max_tokens": st.one_of(st.integers(-3, 6), st.sampled_from([10**7, INT64_MAX, 10**30, -(10**30), NAN])),
    "presence_penalty": floats_around(PENALTIES),
    "frequency_penalty": floats_around(PENALTIES),
    "repetition_penalty": floats_around(REPETITION_PENALTIES),
    "min_p": floats_around(MIN_PS),
    "logit_bias": LOGIT_BIAS,
}


def sampling_of(dialect: str):
    """Some of the dialect's sampling fields (neutral names), each drawn around its edges."""
    return st.fixed_dictionaries({}, optional={name: NEUTRAL_STRATEGIES[name] for name in NAMES[dialect]})


REQUESTS = st.sampled_from(DIALECTS).flatmap(lambda d: st.tuples(st.just(d), sampling_of(d)))

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


# OpenAI's penalties and vLLM's: name -> (fields, expected status, expected param)
PENALTY_CASES = {
    "every penalty at its edge": ({"presence_penalty": -2, "frequency_penalty": 2, "repetition_penalty": 10,
                                   "min_p": 1.0, "temperature": 1.0, "logit_bias": {"0": -100, "49151": 100}},
                                  200, None),
    "the official clients' neutral values": ({"presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}},
                                             200, None),
    "presence_penalty past 2": ({"presence_penalty": 2.01}, 400, "presence_penalty"),
    "NaN frequency_penalty": ({"frequency_penalty": NAN}, 400, "frequency_penalty"),
    "logit_bias past the vocabulary": ({"logit_bias": {str(VOCAB): 1}}, 400, "logit_bias"),
    "logit_bias of 301 tokens": ({"logit_bias": {str(i): 1 for i in range(301)}}, 400, "logit_bias"),
    "logit_bias key with a leading zero": ({"logit_bias": {"07": 1}}, 400, "logit_bias"),
    "logit_bias past 100": ({"logit_bias": {"7": 100.5}}, 400, "logit_bias"),
    "repetition_penalty of 0": ({"repetition_penalty": 0}, 400, "repetition_penalty"),
    "min_p past 1": ({"min_p": 1.5}, 400, "min_p"),
}

# The other dialects: (dialect, fields in its names, expected status)
DIALECT_CASES = [
    ("gemini", {"seed": 2**64, "temperature": 1.0}, 400),
    ("gemini", {"seed": INT64_MIN - 1}, 400),
    ("gemini", {"seed": INT64_MIN, "temperature": 1.0}, 200),
    ("gemini", {"presencePenalty": 2.5}, 400),
    ("gemini", {"frequencyPenalty": -2, "presencePenalty": 2, "seed": 7, "temperature": 1.0}, 200),
    ("messages", {"temperature": 1.5}, 400),
    ("messages", {"temperature": 1e-40, "top_k": 10**30}, 200),
    ("responses", {"temperature": NAN}, 400),
    ("responses", {"top_p": 5e-324, "temperature": 2.0}, 200),
]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("name", [*CASES, *PENALTY_CASES])
def test_sampling_edge_cases(server, name, endpoint):
    fields, status, param = CASES[name] if name in CASES else PENALTY_CASES[name]
    response = post(server, endpoint, fields)
    assert response.status_code == status, response.text
    if param is not None:
        assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("dialect, fields, status", DIALECT_CASES)
def test_sampling_edge_cases_of_the_other_dialects(server, dialect, fields, status):
    response = post(server, dialect, fields)
    assert response.status_code == status, response.text


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
    room = server.engine.context_length - 32  # the fuzz prompts are a few tokens long, templates included
    assert server.engine.model.config.vocab_size == VOCAB

    seen = set()

    with GreedyNeighbour(server) as neighbour, httpx.Client() as client:
        @given(request=REQUESTS)
        @settings(max_examples=120, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        def fuzz(request):
            dialect, fields = request
            response = post(server, dialect, dialect_fields(dialect, fields), client)
            check(response, dialect, fields, room, VOCAB)
            seen.add((dialect, response.status_code))

        fuzz()
    assert seen == {(dialect, status) for dialect in DIALECTS for status in (200, 400)}  # each dialect both ways
    assert neighbour.statuses and set(neighbour.statuses) == {200}
    assert neighbour.replies and set(neighbour.replies) == {neighbour.alone}


def test_the_audits_gemini_seed_fails_alone(server):
    """Issue 25's attack: requests with a Gemini seed of 2**64 beside another tenant's; each is
    a 400 and the other tenant's replies are what it gets alone."""
    with GreedyNeighbour(server) as neighbour, httpx.Client() as client:
        for _ in range(8):
            response = post(server, "gemini", {"seed": 2**64, "temperature": 1.0, "maxOutputTokens": 8}, client)
            assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert neighbour.statuses and set(neighbour.statuses) == {200}
    assert set(neighbour.replies) == {neighbour.alone}
