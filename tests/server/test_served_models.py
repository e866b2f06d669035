"""Models by id and alias: `--served-model-name` gives the tiny model several names, every one
listed and retrievable by the official clients, any one accepted by every dialect, replies
naming the first; an unknown name is a 404 in the dialect's own shape."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types
from google.genai.errors import ClientError
from live_server import start_server
from serve_settings import settings_from_serve

from promptcache.server.settings import ServerSettings

NAMES = ("tiny-chat", "org/tiny-alias")
ASK = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    live = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=2, served_model_names=NAMES))
    yield live
    live.stop()


@pytest.fixture(scope="module", params=["v1beta", "v1"])  # v1: google-genai's default
def gemini(server, request):
    return genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=server.url, api_version=request.param))


def test_openai_lists_and_retrieves_every_name_and_replies_name_the_first(server):
    client = server.client()
    assert [m.id for m in client.models.list().data] == list(NAMES)
    for name in NAMES:  # a name with a slash is one path segment to the client, several to the server
        card = client.models.retrieve(name)
        assert card.id == name and card.model_extra["context_length"] == server.engine.context_length
    reply = client.chat.completions.create(model=NAMES[1], messages=ASK, max_tokens=1)
    assert reply.model == NAMES[0]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve(server.engine.model_name)  # the model's own name is not served under aliases
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="tiny-chat ", prompt="Hi", max_tokens=1)


def test_anthropic_lists_and_retrieves_in_its_own_shape(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    listed = client.models.list()
    assert [m.id for m in listed.data] == list(NAMES) and listed.has_more is False
    page = client.models.list(limit=1, after_id=NAMES[0])
    assert [m.id for m in page.data] == [NAMES[1]] and page.first_id == page.last_id == NAMES[1]
    model = client.models.retrieve(NAMES[1])
    assert model.type == "model" and model.display_name == NAMES[1] and model.created_at.year >= 2024
    assert client.messages.create(model=NAMES[1], max_tokens=1, messages=ASK).model == NAMES[0]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("claude-nothing")
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-nothing", max_tokens=1, messages=ASK)


def test_gemini_lists_gets_and_generates_under_any_name(server, gemini):
    listed = [m.name for m in gemini.models.list()]
    assert listed == [f"models/{n}" for n in NAMES]
    model = gemini.models.get(model=NAMES[0])
    assert model.name == f"models/{NAMES[0]}" and model.input_token_limit == server.engine.context_length
    assert "generateContent" in model.supported_actions and "countTokens" in model.supported_actions
    reply = gemini.models.generate_content(model=NAMES[0], contents="Hi",
                                           config=types.GenerateContentConfig(max_output_tokens=1))
    assert reply.model_version == NAMES[0] and reply.usage_metadata.candidates_token_count == 1
    with pytest.raises(ClientError) as missing:
        gemini.models.get(model="gemini-nothing")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"
    assert gemini.models.count_tokens(model=NAMES[0], contents="Hi").total_tokens == \
        reply.usage_metadata.prompt_token_count
    with pytest.raises(ClientError) as missing:
        gemini.models.generate_content(model="gemini-nothing", contents="Hi")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"


def test_an_unknown_model_is_a_404_over_raw_http_too(server):
    body = {"model": "nothing", "messages": ASK}
    openai_404 = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert openai_404.status_code == 404 and openai_404.json()["error"]["param"] == "model"
    assert httpx.get(server.url + "/v1/models/nothing").json()["error"]["code"] == "model_not_found"
    assert httpx.get(server.url + "/v1/models/llama3:8b").json()["error"]["param"] == "model"  # OpenAI's shape
    bad = httpx.post(f"{server.url}/v1/models/{NAMES[0]}:generateContent", json={"contents": []})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"  # Gemini's, on v1


def test_settings_refuse_duplicate_or_empty_names():
    for names in (("a", "a"), ("",), ("bad\nname",)):
        with pytest.raises(ValueError, match="served model names"):
            ServerSettings(served_model_names=names)


@pytest.mark.parametrize("args, env", [(["--served-model-name", "a", "--served-model-name", "b"], {}),
                                       ([], {"PROMPTCACHE_SERVED_MODEL_NAME": "a b"})])
def test_serve_takes_several_names_from_flags_or_the_environment(monkeypatch, args, env):
    assert settings_from_serve(monkeypatch, args, env).served_model_names == ("a", "b")
