"""The real embedded SmolLM2-135M-Instruct behind the server: caching reuses the shared
system prompt and changes nothing in the greedy reply."""

from __future__ import annotations

import pytest
from server_prompts import SYSTEM_PROMPT, chat
from live_server import start_server

from promptcache.server.settings import ServerSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_server():
    server = start_server(ServerSettings(model=None, default_max_tokens=16))
    yield server
    server.stop()


def test_cached_reply_equals_uncached_reply(smol_server):
    client = smol_server.client()
    ask = lambda user, **kw: client.chat.completions.create(  # noqa: E731
        model=smol_server.model, messages=chat(SYSTEM_PROMPT, user), max_tokens=12, temperature=0, **kw
    )
    ask("What is rule 1?")
    cached = ask("What is rule 2?")
    uncached = ask("What is rule 2?", extra_body={"caching": {"enabled": False}})
    assert cached.usage.prompt_tokens_details.cached_tokens >= 300
    assert uncached.usage.prompt_tokens_details.cached_tokens == 0
    assert cached.choices[0].message.content == uncached.choices[0].message.content
    assert cached.choices[0].message.content.strip()


def test_streamed_multi_turn_reuses_the_conversation(smol_server):
    client = smol_server.client()
    messages = chat(SYSTEM_PROMPT, "Name a color.")
    first = client.chat.completions.create(model=smol_server.model, messages=messages, max_tokens=8, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "Another?"}]
    chunks = list(
        client.chat.completions.create(
            model=smol_server.model, messages=messages, max_tokens=8, temperature=0,
            stream=True, stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 16
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    uncached = client.chat.completions.create(
        model=smol_server.model, messages=messages, max_tokens=8, temperature=0,
        extra_body={"caching": {"enabled": False}},
    )
    assert uncached.usage.prompt_tokens_details.cached_tokens == 0
    assert streamed == uncached.choices[0].message.content  # the reused turns change nothing
    assert streamed.strip()
