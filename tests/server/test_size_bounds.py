"""Sizes bounded before work, on a live tiny server: a registry template's rendering refused from
its computed size, prompt text too long for any tokenization to fit the context refused before
the tokenizer runs (in each dialect's error shape), and logprobs responses bounded."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from live_server import start_server

from promptcache.server.prompts.template import Template
from promptcache.server.settings import build_settings

ENTRIES = 1000  # max_logprob_entries of the server below


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounds")
    settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=4, responses_db=":memory:",
                                   prompt_store=str(tmp / "prompts.sqlite3"), max_logprob_entries=ENTRIES))
    server = start_server(settings)
    yield server
    server.stop()


@pytest.fixture()
def encoded(server, monkeypatch):
    """The lengths of the texts the server's tokenizer is asked to encode."""
    tokenizer, lengths = server.engine.tokenizer, []
    encode = tokenizer.encode

    def counting(text, *args, **kwargs):
        lengths.append(len(text))
        return encode(text, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode", counting)
    return lengths


def longest_prompt(server) -> int:
    """Characters past which no text fits the context (SmolLM2's tokenizer: 81 per token)."""
    return server.engine.context_length * server.engine.tokenizer.max_chars_per_token


def http(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60)


@given(text=st.text(alphabet="ab{} _\n", max_size=40),
       values=st.dictionaries(st.sampled_from("ab"), st.text(max_size=9)))
def test_the_rendered_size_is_known_before_rendering(text, values):
    template = Template(text)
    values = {name: values.get(name, "v") for name in template.variables}
    assert template.rendered_chars(values) == len(template.render(values))


def test_a_template_that_would_render_past_the_bound_is_refused_unbuilt(server, encoded):
    limit = longest_prompt(server)
    template = "{{a}}" * 26_000  # a 130 KB template: 26,000 uses of one variable
    with http(server) as client:
        pid = client.post("/v1/prompts", json={"template": template}).json()["id"]
        refused = client.post("/v1/chat/completions", json={
            "model": server.model, "messages": [{"role": "user", "content": "Hi"}],
            "prompt": {"id": pid, "variables": {"a": "x" * 10}}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt.variables"
    assert f"would be 260000 characters long; the limit is {limit}" in refused.json()["error"]["message"]
    assert encoded == []


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", lambda text: {"prompt": text}, "prompt"),
    ("/v1/completions", lambda text: {"prompt": ["Hi", text]}, "prompt"),
    ("/v1/chat/completions", lambda text: {"messages": [{"role": "user", "content": text}]}, "messages"),
    ("/tokenize", lambda text: {"prompt": text}, "prompt"),
])
def test_text_longer_than_the_context_could_hold_is_refused_before_tokenizing(server, encoded, path, body, param):
    limit = longest_prompt(server)
    with http(server) as client:
        refused = client.post(path, json={"model": server.model, **body("x" * (limit + 1))})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param and "was not tokenized" in refused.json()["error"]["message"]
    assert all(length <= limit for length in encoded)


def test_the_refusal_has_the_dialects_own_shape(server, encoded):
    limit = longest_prompt(server)
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="was not tokenized"):
        client.messages.create(model=server.model, max_tokens=4,
                               messages=[{"role": "user", "content": "x" * (limit + 1)}])
    assert all(length <= limit for length in encoded)


def test_text_at_the_bound_is_tokenized(server):
    limit = longest_prompt(server)
    with http(server) as client:
        answer = client.post("/tokenize", json={"prompt": "x" * limit})
    assert answer.status_code == 200 and answer.json()["count"] > 0


def test_logprobs_past_the_entry_limit_are_refused_before_generating(server):
    prompts = ["The quick brown fox jumps over the lazy dog. " * 3] * 8  # ~30 tokens each
    with http(server) as client:
        echo = client.post("/v1/completions", json={"model": server.model, "prompt": prompts, "echo": True,
                                                    "logprobs": 20, "max_tokens": 0})
        prompt_lp = client.post("/v1/completions", json={"model": server.model, "prompt": prompts[0] * 3,
                                                         "prompt_logprobs": 20, "max_tokens": 1})
        chat = client.post("/v1/chat/completions", json={
            "model": server.model, "messages": [{"role": "user", "content": "Hi"}], "logprobs": True,
            "top_logprobs": 20, "max_tokens": 100})
        served = client.post("/v1/completions", json={"model": server.model, "prompt": "Hello there", "echo": True,
                                                      "logprobs": 5, "max_tokens": 2})
    assert [echo.status_code, prompt_lp.status_code, chat.status_code] == [400, 400, 400]
    assert [r.json()["error"]["param"] for r in (echo, prompt_lp, chat)] == ["logprobs", "prompt_logprobs", "logprobs"]
    assert served.status_code == 200
    shown = served.json()["choices"][0]["logprobs"]["top_logprobs"]
    assert sum(len(entry or {}) for entry in shown) <= ENTRIES
