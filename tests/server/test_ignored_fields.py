"""Request fields the server does not know are never ignored in silence: each dialect serves
the request and names them in `x-ignored-fields` (top level and nested, sanitized, at most 16),
logs them with the request id and counts them; `--reject-unknown-fields` makes them the
dialect's 400. Gemini refuses them in any case, as Gemini's API does. Live servers, tiny model."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from live_server import start_server
from serve_settings import settings_from_serve

from promptcache.server.core.lenient import unknown_fields
from promptcache.server.openai.responses.schema import ResponsesRequest
from promptcache.server.settings import ServerSettings

USER = [{"role": "user", "content": "hi", "name_typo": 1}]
# path -> (a body with an unknown field at the top and one nested, the names the header gives)
CASES = {
    "/v1/chat/completions": ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "lang": "en"}]}],
                              "max_token": 5, "max_tokens": 1},
                             ["max_token", "messages[0].content[0].lang"]),
    "/v1/completions": ({"prompt": "hi", "max_tokens": 1, "stream_options": {"include_usage": True, "x": 1},
                         "frequency": 2}, ["frequency", "stream_options.x"]),
    "/v1/responses": ({"input": [{"role": "user", "content": "hi", "phase": "a"}], "max_output_tokens": 1,
                       "store": False, "verbosity": "low"}, ["verbosity", "input[0].phase"]),
    "/v1/messages": ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "citations": []}]}],
                      "max_tokens": 1, "service_tier": "auto"}, ["service_tier", "messages[0].content[0].citations"]),
    "/v1/messages/count_tokens": ({"messages": USER}, ["messages[0].name_typo"]),
    "/v1/cache/flush": ({"include_pinned": False, "tenant_id": "x"}, ["model", "tenant_id"]),  # admin: no model
}
SAFE = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")


@pytest.fixture(scope="module")
def lenient(tiny_server):
    return tiny_server  # the default: unknown fields served and named


@pytest.fixture(scope="module")
def strict(tiny_llama_dir, request):
    """A second server, on an engine of its own (an engine has one stepping thread)."""
    server = start_server(ServerSettings(model=str(tiny_llama_dir), reject_unknown_fields=True))
    request.addfinalizer(server.stop)
    return server


def post(server, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, json={"model": server.model, **body}, timeout=60, **kwargs)


def ignored_count(server, dialect: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf'^promptcache_ignored_fields_total{{dialect="{dialect}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("path", list(CASES))
def test_unknown_fields_are_served_and_named(lenient, path):
    body, names = CASES[path]
    r = post(lenient, path, body)
    assert r.status_code == 200, r.text
    assert r.headers["x-ignored-fields"] == ",".join(names)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_a_streamed_reply_names_them_too(lenient, path):
    body, names = CASES[path]
    with httpx.stream("POST", lenient.url + path, json={"model": lenient.model, **body, "stream": True},
                      timeout=60) as r:
        r.read()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-ignored-fields"] == ",".join(names)


def test_known_fields_and_neutral_values_name_nothing(lenient):
    for path, body in [("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                 "max_tokens": 1, "presence_penalty": 0}),
                       ("/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                                         "thinking": {"type": "disabled"}})]:
        r = post(lenient, path, body)
        assert r.status_code == 200 and "x-ignored-fields" not in r.headers


def test_hostile_names_are_sanitized_capped_logged_and_counted(lenient, caplog):
    hostile = 'evil\r\nX-Injected: 1"\'' + "k" * 10_000
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, hostile: 1,
            **{f"knob{i}": i for i in range(30)}}
    before = ignored_count(lenient, "openai")
    with caplog.at_level(logging.WARNING, logger="promptcache.server"):
        r = post(lenient, "/v1/chat/completions", body)
    assert r.status_code == 200
    assert "x-injected" not in r.headers
    names = r.headers["x-ignored-fields"].split(",")
    assert len(names) == 16 and all(SAFE.fullmatch(n) for n in names)
    assert names[0] == "evil__X-Injected__1__" + "k" * 43 and names[1:3] == ["knob0", "knob1"]
    assert ignored_count(lenient, "openai") == before + 31  # every one counted, beyond the 16 named
    lines = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("ignored_fields")]
    assert len(lines) == 1 and r.headers["x-request-id"] in lines[0] and "knob14" in lines[0]
    assert "\n" not in lines[0] and "X-Injected: 1" not in lines[0]


def test_unknown_fields_reach_no_dump_and_no_attribute():
    """Named, but nothing else sees them: not a stored or echoed item, nor code that reads an
    optional attribute (`getattr(message, "is_error", False)`)."""
    body = ResponsesRequest.model_validate({"model": "m", "input": [{"role": "user", "content": "hi", "phase": "a"}],
                                            "verbosity": "low"})
    assert unknown_fields(body) == (["verbosity", "input[0].phase"], 2)
    assert "phase" not in body.items()[0].model_dump() and "low" not in body.model_dump_json()
    assert getattr(body.items()[0], "phase", None) is None and not hasattr(body, "verbosity")


@pytest.mark.parametrize("path", list(CASES))
def test_the_option_makes_them_a_400_in_the_dialects_shape(strict, path):
    body, names = CASES[path]
    r = post(strict, path, body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert f"'{names[0]}'" in error["message"]
    if path.startswith("/v1/messages"):  # Anthropic's shape
        assert r.json()["type"] == "error" and error["type"] == "invalid_request_error"
    else:
        assert error["param"] == names[0] and error["code"] == "unknown_parameter"


def test_the_option_names_a_nested_field_by_its_path(strict):
    r = post(strict, "/v1/chat/completions", {"messages": USER, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].name_typo"


@pytest.mark.parametrize("body", [{"generationConfig": {"maxOutputTokens": 1, "tempreature": 0}},
                                  {"safety": "off"}])
def test_gemini_refuses_them_either_way(lenient, strict, body):
    for server in (lenient, strict):
        contents = [{"role": "user", "parts": [{"text": "hi"}]}]
        r = httpx.post(f"{server.url}/v1beta/models/{server.model}:generateContent",
                       json={"contents": contents, **body}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_the_official_clients_send_nothing_unknown(strict):
    client = strict.client()
    chat = client.chat.completions.create(model=strict.model, messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=1, temperature=0, seed=1, user="u", stream_options=None)
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert client.completions.create(model=strict.model, prompt="hi", max_tokens=1).choices
    assert client.responses.create(model=strict.model, input="hi", max_output_tokens=1, store=False).output
    anthropic = pytest.importorskip("anthropic")
    reply = anthropic.Anthropic(base_url=strict.url, api_key="unused", max_retries=0).messages.create(
        model=strict.model, max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    assert reply.stop_reason in ("end_turn", "max_tokens")



@pytest.mark.parametrize("flag, env", [(["--reject-unknown-fields"], {}), ([], {"PROMPTCACHE_REJECT_UNKNOWN_FIELDS": "1"})])
def test_serve_takes_the_option_from_a_flag_or_the_environment(monkeypatch, flag, env):
    assert settings_from_serve(monkeypatch, flag, env).reject_unknown_fields is True
