"""/tokenize, /detokenize and /tokenizer_info on a live server, in vLLM's and llama.cpp's shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from live_server import start_server  # noqa: E402

from promptcache.server.settings import ServerSettings  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    live = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=8))
    yield live
    live.stop()


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def test_tokenize_a_prompt_as_the_engine_does(server):
    tokenizer = server.engine.tokenizer
    answer = post(server, "/tokenize", {"model": server.model, "prompt": "Hello world", "return_token_strs": True})
    assert answer.status_code == 200
    body = answer.json()
    assert body["tokens"] == tokenizer.encode("Hello world") and body["count"] == len(body["tokens"])
    assert body["max_model_len"] == server.engine.context_length
    assert "".join(body["token_strs"]).replace("Ġ", " ").endswith("Hello world")
    # llama.cpp's field names give the same tokens.
    assert post(server, "/tokenize", {"content": "Hello world", "with_pieces": True}).json()["tokens"] == body["tokens"]


def test_tokenize_messages_gives_the_chat_prompt_a_request_would_send(server):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    body = post(server, "/tokenize", {"messages": messages}).json()
    text = server.engine.tokenizer.apply_chat_template(messages)
    assert body["tokens"] == server.engine.tokenizer.encode(text, add_special_tokens=False)
    prefix = post(server, "/tokenize", {"messages": messages, "add_generation_prompt": False}).json()["tokens"]
    assert body["tokens"][:len(prefix)] == prefix and len(prefix) < len(body["tokens"])


def test_detokenize_round_trips(server):
    tokens = server.engine.tokenizer.encode("The capital of France", add_special_tokens=False)
    assert post(server, "/detokenize", {"tokens": tokens}).json() == {"prompt": "The capital of France"}


def test_tokenizer_info_is_what_a_remote_tokenizer_client_reads(server):
    info = httpx.get(server.url + "/tokenizer_info", timeout=30).json()
    tokenizer = server.engine.tokenizer
    assert info["tokenizer_class"] and info["vocab_size"] == tokenizer.vocab_size
    assert info["eos_token"] == tokenizer.backend.id_to_token(tokenizer.eos_token_ids[0])
    assert info["chat_template"] and info["model_max_length"] == server.engine.context_length


@pytest.mark.parametrize("path, body, status, param", [
    ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, 400, "prompt"),
    ("/tokenize", {}, 400, "prompt"),
    ("/tokenize", {"prompt": "a", "truncate": True}, 400, "truncate"),
    ("/tokenize", {"model": "other-model", "prompt": "a"}, 404, "model"),  # as an unknown model is everywhere
    ("/tokenize", {"messages": [{"role": "user", "content": "a"}] * 2049}, 400, "messages"),
    ("/detokenize", {"tokens": [10**9]}, 400, "tokens"),
    ("/detokenize", {"tokens": "abc"}, 400, "tokens"),
])
def test_bad_requests_are_4xx_naming_the_field(server, path, body, status, param):
    answer = post(server, path, body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param
