"""Fields a dialect defines that this server does not implement are refused with a 400 that
names them, in the dialect's error shape, unless set to their neutral value: never silently
ignored (live server, tiny model)."""

from __future__ import annotations

import httpx
import pytest

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
BASES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"prompt": "hi", "max_tokens": 1},
    "/v1/responses": {"input": "hi", "max_output_tokens": 1, "store": False},
    "/v1/messages": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
}
REFUSED = [
    ("/v1/chat/completions", "functions", [{"name": "f", "parameters": {"type": "object"}}]),
    ("/v1/chat/completions", "function_call", "auto"),
    ("/v1/completions", "modalities", ["audio"]),
    ("/v1/chat/completions", "audio", {"voice": "alloy", "format": "wav"}),
    ("/v1/chat/completions", "modalities", ["text", "audio"]),
    ("/v1/completions", "best_of", 3),
    ("/v1/completions", "suffix", "end"),
    ("/v1/responses", "background", True),
    ("/v1/responses", "reasoning", {"effort": "high"}),
    ("/v1/responses", "include", ["message.output_text.logprobs"]),
    ("/v1/responses", "truncation", "auto"),
    ("/v1/messages", "thinking", {"type": "enabled", "budget_tokens": 1024}),
    ("/v1/messages", "diagnostics", {"previous_message_id": None}),
]
NEUTRAL = [
    ("/v1/chat/completions", "functions", []),
    ("/v1/chat/completions", "function_call", "none"),
    ("/v1/chat/completions", "modalities", ["text"]),
    ("/v1/completions", "best_of", 1),
    ("/v1/responses", "truncation", "disabled"),
    ("/v1/messages", "thinking", {"type": "disabled"}),
]


def post(server, path: str, field: str, value) -> httpx.Response:
    return httpx.post(server.url + path, json={"model": server.model, **BASES[path], field: value}, timeout=60)


@pytest.mark.parametrize("path, field, value", REFUSED)
def test_unimplemented_fields_are_a_400_naming_them(tiny_server, path, field, value):
    r = post(tiny_server, path, field, value)
    assert r.status_code == 400
    error = r.json()["error"]
    assert f"'{field}'" in error["message"]
    if path != "/v1/messages":  # Anthropic's shape has no param
        assert error["param"] == field and error["code"] == "unsupported_parameter"
    else:
        assert r.json()["type"] == "error" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path, field, value", NEUTRAL)
def test_their_neutral_values_are_accepted(tiny_server, path, field, value):
    assert post(tiny_server, path, field, value).status_code == 200
