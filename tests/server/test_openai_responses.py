"""OpenAI's Responses API through the official client against a live server (tiny model): a
three-turn previous_response_id chain served from the cache with the text of the whole history
sent cache-off, typed stream events, stored responses owned by their tenant (GET, DELETE,
input_items), and the SQLite store's expiry on an injected clock."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from live_server import start_server
from server_prompts import KEYS, SYSTEM_PROMPT

from promptcache.server.openai.responses.store import SqliteResponseStore, StoredResponse
from promptcache.server.settings import build_settings

BLOCK = 16


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("responses")
    keys_file = tmp / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=8,
                                   responses_db=str(tmp / "responses.sqlite3")), keys_file=keys_file)
    live = start_server(settings)
    yield live
    live.stop()


def client(server, key: str = "key-alice") -> openai.OpenAI:
    return server.client(api_key=key)


def create(server, key: str = "key-alice", **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_output_tokens", 6)
    return client(server, key).responses.create(model=server.model, instructions=SYSTEM_PROMPT, **kw)


def test_three_turn_chain_is_served_from_the_cache_with_the_cache_off_text(server):
    questions = ["Turn one: which rule is first?", "Turn two: and the next?", "Turn three: and the last?"]
    r1 = create(server, input=questions[0])
    r2 = create(server, input=questions[1], previous_response_id=r1.id)
    r3 = create(server, input=questions[2], previous_response_id=r2.id)
    assert r1.usage.input_tokens_details.cached_tokens == 0
    # Each turn's cached prefix covers every full block of the previous turn's prompt (at most
    # the last block can differ, where the reply's first token joins the assistant header).
    for before, after in ((r1, r2), (r2, r3)):
        assert after.usage.input_tokens_details.cached_tokens >= before.usage.input_tokens // BLOCK * BLOCK - BLOCK
        assert after.usage.input_tokens > before.usage.input_tokens
    history = [{"role": "user", "content": questions[0]}, {"role": "assistant", "content": r1.output_text},
               {"role": "user", "content": questions[1]}, {"role": "assistant", "content": r2.output_text},
               {"role": "user", "content": questions[2]}]
    whole = create(server, input=history, store=False, extra_body={"caching": {"type": "disabled"}})
    assert whole.usage.input_tokens_details.cached_tokens == 0
    assert whole.usage.input_tokens == r3.usage.input_tokens
    assert whole.output_text == r3.output_text


def test_response_shape_and_incomplete_on_max_output_tokens(server):
    reply = create(server, input="Shape?", max_output_tokens=2)
    assert reply.object == "response" and reply.id.startswith("resp_")
    assert reply.output[0].type == "message" and reply.output[0].content[0].type == "output_text"
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    # The tiny model's greedy reply to this prompt is longer than 2 tokens: it is cut, and so is its message.
    assert reply.usage.output_tokens == 2
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output[0].status == "incomplete"


def test_stored_responses_belong_to_their_tenant(server):
    mine = create(server, input="Keep this one.")
    c = client(server)
    assert c.responses.retrieve(mine.id).output_text == mine.output_text
    items = c.responses.input_items.list(mine.id)
    assert [i.content[0].text for i in items.data] == ["Keep this one."]
    other = client(server, "key-bob")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError) as err:
        create(server, key="key-bob", input="continue", previous_response_id=mine.id)
    assert err.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    c.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(mine.id)


def test_store_false_keeps_nothing(server):
    reply = create(server, input="Forget me.", store=False)
    with pytest.raises(openai.NotFoundError):
        client(server).responses.retrieve(reply.id)


def test_stream_sends_typed_events_and_the_same_text(server):
    plain = create(server, input="Stream this.")
    events = list(create(server, input="Stream this.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == plain.output_text == final.output_text
    assert kinds[-1] == f"response.{final.status}" and final.status == plain.status
    assert final.output[0].status == plain.output[0].status
    assert final.usage.input_tokens_details.cached_tokens > 0
    # The streamed response was stored before the closing event went out.
    assert client(server).responses.retrieve(final.id).output_text == text


@pytest.mark.parametrize("field, value, named", [
    ("text", {"format": {"type": "xml"}}, "text"),
    ("tool_choice", {"type": "function", "name": "f"}, "tool_choice"),
    ("input", [{"type": "input_image", "image_url": "data:,"}], "input"),
])
def test_fields_the_server_cannot_honour_are_a_400_naming_them(server, field, value, named):
    body = {"model": server.model, "input": "hi", field: value}
    r = httpx.post(server.base_url + "/responses", json=body, headers={"Authorization": "Bearer key-alice"})
    assert r.status_code == 400
    assert r.json()["error"]["param"].startswith(named)


def test_sqlite_store_expires_and_scopes_by_tenant(tmp_path):
    now = [0.0]
    store = SqliteResponseStore(tmp_path / "r.sqlite3", ttl_s=60, clock=lambda: now[0])
    store.put(StoredResponse("resp_1", "alice", {"id": "resp_1"}, [], [{"role": "user", "content": "x"}]))
    assert store.get("alice", "resp_1").history == [{"role": "user", "content": "x"}]
    assert store.get("bob", "resp_1") is None and not store.delete("bob", "resp_1")
    now[0] = 59.0
    assert store.get("alice", "resp_1") is not None
    # A new store on the same file (a restart) still has it.
    assert SqliteResponseStore(tmp_path / "r.sqlite3", ttl_s=60, clock=lambda: now[0]).get("alice", "resp_1")
    now[0] = 60.0
    assert store.get("alice", "resp_1") is None and not store.delete("alice", "resp_1")
