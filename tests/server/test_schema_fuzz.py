"""Schemathesis over the app's own OpenAPI schema: whatever fits (or nearly fits) the schema,
the live server answers without a 5xx. Bounded to a few examples per operation."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from live_server import start_server

from promptcache.server.settings import ServerSettings


@pytest.fixture(scope="module")
def fuzz_server(tiny_llama_dir):
    # Small replies so that generated requests without max_tokens stay cheap.
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=4, max_queue=64,
                                         responses_db=":memory:"))
    yield server
    server.stop()


def operations(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def check_case(case) -> None:
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int):
        body["max_tokens"] = min(body["max_tokens"], 8)  # bounded time, not bounded coverage
    response = case.call(timeout=60)
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)
    if response.status_code >= 400 and "application/json" in str(response.headers.get("content-type")):
        error = response.json()
        if case.path.startswith("/v1/messages"):  # Anthropic's shape
            assert error["type"] == "error" and set(error["error"]) == {"type", "message"}
        elif case.path.startswith("/v1beta") or ":" in case.path:  # Gemini's shape (its v1 method paths too)
            assert set(error["error"]) == {"code", "message", "status"}
        else:
            assert set(error["error"]) == {"message", "type", "param", "code"}


def test_no_server_errors(fuzz_server):
    ops = operations(fuzz_server)
    assert {op.path for op in ops} >= {"/v1/chat/completions", "/v1/completions", "/v1/cache/pin", "/v1/messages",
                                       "/v1/responses"}
    for op, mode in itertools.product(ops, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):
        if mode is GenerationMode.NEGATIVE and op.method.upper() != "POST":
            continue  # nothing to get wrong in a bodiless GET

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def fuzz(case):
            check_case(case)

        fuzz()
