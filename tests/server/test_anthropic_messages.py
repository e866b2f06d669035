"""The Anthropic Messages dialect through the official `anthropic` client against a live server
(tiny random-weight model): cache_control breakpoints with creation then read, TTL expiry and
refresh on an injected clock, the 4-breakpoint limit, streaming events with usage, x-api-key
tenants, count_tokens, and Anthropic's error shape."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from live_server import start_server
from server_prompts import KEYS, SYSTEM_PROMPT

from promptcache.server.app import engine_from_settings
from promptcache.server.settings import build_settings


class FakeClock:
    """The cache's clock, moved by the test: TTLs are checked without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=8), keys_file=keys_file)
    engine = engine_from_settings(settings)
    clock = FakeClock()
    # The prefix cache takes its clock at construction and the engine builds it, so the test
    # replaces it on the built cache; everything else runs as in production.
    engine.prefix.cache._clock = clock
    live = start_server(settings, engine)
    live.clock = clock
    yield live
    live.stop()


def client(server, key: str = "key-alice") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def ask(server, system, question: str, key: str = "key-alice", **kw):
    return client(server, key).messages.create(
        model=server.model, max_tokens=8, system=system, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": question}], **kw)


def marked(ttl: str = "5m") -> list[dict]:
    return [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


def test_breakpoint_creates_then_reads_with_the_same_greedy_text(server):
    first = ask(server, marked(), "Which rule is first?", key="key-bob")
    again = ask(server, marked(), "Which rule is first?", key="key-bob")
    u1, u2 = first.usage, again.usage
    assert first.type == "message" and first.role == "assistant" and first.stop_reason in ("end_turn", "max_tokens")
    assert u1.cache_read_input_tokens == 0 and u1.cache_creation_input_tokens >= 320
    assert u1.cache_creation.ephemeral_5m_input_tokens == u1.cache_creation_input_tokens
    assert u1.cache_creation.ephemeral_1h_input_tokens == 0
    # The repeat reads what the first wrote (and the automatically cached blocks after it).
    assert u2.cache_read_input_tokens >= u1.cache_creation_input_tokens and u2.cache_creation_input_tokens == 0
    for u in (u1, u2):
        assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == u1.input_tokens + \
            u1.cache_creation_input_tokens
    assert again.content[0].text == first.content[0].text
    # Another tenant (same prompt, its own key) neither reads bob's entries nor hits them.
    other = ask(server, marked(), "Which rule is first?", key="key-alice")
    assert other.usage.cache_read_input_tokens == 0 and other.content[0].text == first.content[0].text


def test_ttl_expiry_makes_a_new_creation_and_a_hit_refreshes_it(server):
    system = marked("5m")
    system[0]["text"] = "TTL edition. " + system[0]["text"]
    created = ask(server, system, "One?").usage
    assert created.cache_creation_input_tokens > 0
    server.clock.now += 200
    assert ask(server, system, "Two?").usage.cache_read_input_tokens >= created.cache_creation_input_tokens
    server.clock.now += 200  # 400 s after creation but 200 s after the hit that refreshed it
    assert ask(server, system, "Three?").usage.cache_read_input_tokens >= created.cache_creation_input_tokens
    server.clock.now += 301  # past 5 minutes since the last use: expired
    body = {"model": server.model, "max_tokens": 8, "system": system, "messages": [{"role": "user", "content": "Four?"}]}
    why = httpx.post(server.url + "/v1/cache/explain", json=body, headers={"x-api-key": "key-alice"}).json()
    assert why["cached_tokens"] == 0 and why["cause"].startswith("expired")
    expired = ask(server, system, "Four?").usage
    assert expired.cache_read_input_tokens == 0
    assert expired.cache_creation_input_tokens == created.cache_creation_input_tokens


def test_one_hour_breakpoint_outlives_five_minutes(server):
    system = marked("1h")
    system[0]["text"] = "Hour edition. " + system[0]["text"]
    created = ask(server, system, "One?").usage
    assert created.cache_creation.ephemeral_1h_input_tokens == created.cache_creation_input_tokens > 0
    server.clock.now += 1800
    assert ask(server, system, "Two?").usage.cache_read_input_tokens >= created.cache_creation_input_tokens


def test_breakpoints_on_messages_split_creation_by_ttl(server):
    mark = lambda text, ttl: {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}  # noqa: E731
    reply = client(server).messages.create(
        model=server.model, max_tokens=4, extra_body={"temperature": 0},
        system=[mark("Split edition. " + SYSTEM_PROMPT, "1h")],
        messages=[{"role": "user", "content": [mark(SYSTEM_PROMPT[:600], "5m"), {"type": "text", "text": "Go"}]}])
    split = reply.usage.cache_creation
    assert split.ephemeral_1h_input_tokens >= 320 and split.ephemeral_5m_input_tokens >= 100
    assert reply.usage.input_tokens > 0  # the text after the last breakpoint and the assistant header


def test_each_breakpoint_keeps_its_own_segment_for_its_own_ttl(server):
    mark = lambda text, ttl: {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}  # noqa: E731
    system = [mark("Segment edition. " + SYSTEM_PROMPT, "1h")]
    messages = [{"role": "user", "content": [mark(SYSTEM_PROMPT[:600], "5m"), {"type": "text", "text": "Go"}]}]
    create = lambda: client(server).messages.create(  # noqa: E731
        model=server.model, max_tokens=4, extra_body={"temperature": 0}, system=system, messages=messages).usage
    first = create()
    hour, five = first.cache_creation.ephemeral_1h_input_tokens, first.cache_creation.ephemeral_5m_input_tokens
    assert hour >= 320 and five >= 100
    server.clock.now += 1800  # the 5m segment has expired, the 1h one has not
    later = create()
    assert later.cache_read_input_tokens == hour
    assert later.cache_creation.ephemeral_5m_input_tokens == five and later.cache_creation.ephemeral_1h_input_tokens == 0


def test_top_level_cache_control_marks_the_whole_conversation(server):
    messages = [{"role": "user", "content": "Automatic edition. " + SYSTEM_PROMPT}]
    first = client(server).messages.create(model=server.model, max_tokens=4, messages=messages,
                                           cache_control={"type": "ephemeral"}).usage
    again = client(server).messages.create(model=server.model, max_tokens=4, messages=messages,
                                           cache_control={"type": "ephemeral"}).usage
    assert first.cache_creation_input_tokens >= 320 and first.cache_read_input_tokens == 0
    assert again.cache_read_input_tokens >= first.cache_creation_input_tokens


def test_a_fifth_breakpoint_is_a_400_in_anthropics_shape(server):
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError) as err:
        client(server).messages.create(model=server.model, max_tokens=4, system=blocks,
                                       messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "maximum of 4 blocks with cache_control" in err.value.body["error"]["message"]


def test_streaming_event_sequence_text_and_usage(server):
    system = marked()
    plain = ask(server, system, "Stream it")
    with client(server).messages.stream(model=server.model, max_tokens=8, system=system,
                                        extra_body={"temperature": 0},
                                        messages=[{"role": "user", "content": "Stream it"}]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == plain.content[0].text
    assert final.usage.output_tokens == plain.usage.output_tokens
    before = plain.usage.cache_read_input_tokens + plain.usage.cache_creation_input_tokens
    assert final.usage.cache_read_input_tokens >= before > 0 and final.usage.cache_creation_input_tokens == 0
    raw = [e for e in events if e in {"message_start", "content_block_start", "content_block_stop",
                                      "message_delta", "message_stop"}]
    assert raw == ["message_start", "content_block_start", "content_block_stop", "message_delta", "message_stop"]


def test_raw_stream_names_each_event_and_carries_usage_in_start_and_delta(server):
    body = {"model": server.model, "max_tokens": 3, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, headers={"x-api-key": "key-alice"}) as r:
        lines = [line for line in r.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert [d["type"] for d in data] == names
    assert "cache_read_input_tokens" in data[0]["message"]["usage"]
    assert data[-2]["usage"]["output_tokens"] >= 1 and "input_tokens" in data[-2]["usage"]


def test_count_tokens_matches_the_prompt_the_model_sees(server):
    system = marked()
    counted = client(server).messages.count_tokens(model=server.model, system=system,
                                                   messages=[{"role": "user", "content": "Count me"}])
    usage = ask(server, system, "Count me").usage
    assert counted.input_tokens == usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens


@pytest.mark.parametrize("headers, status, kind", [
    ({}, 401, "authentication_error"),
    ({"x-api-key": "wrong"}, 401, "authentication_error"),
    ({"x-api-key": "key-alice"}, 400, "invalid_request_error"),
])
def test_errors_are_in_anthropics_shape(server, headers, status, kind):
    body = {"model": server.model, "messages": [{"role": "user", "content": "no max_tokens"}]}
    r = httpx.post(server.url + "/v1/messages", json=body, headers=headers)
    assert r.status_code == status
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind


@pytest.mark.parametrize("field, value, named", [
    ("tool_choice", {"type": "tool", "name": "f"}, "tool_choice"),
    ("messages", [{"role": "user", "content": [{"type": "image", "source": {}}]}], "messages"),
    ("temperature", 1.5, "temperature"),
    ("model", "other-model", "other-model"),
])
def test_requests_the_server_cannot_honour_name_the_field(server, field, value, named):
    body = {"model": server.model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], field: value}
    r = httpx.post(server.url + "/v1/messages", json=body, headers={"x-api-key": "key-alice"})
    assert 400 <= r.status_code < 500
    assert r.json()["type"] == "error" and named in r.json()["error"]["message"]
