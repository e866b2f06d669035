"""Chat-template stability: a conversation re-rendered with one more turn must start with the
tokens of the earlier turn's prompt, or the next turn misses the cache.

SmolLM2's template (ChatML) is stable: checked as a property over drawn conversations. A
Qwen-style template that drops earlier reasoning (`<think>...</think>`) from assistant turns is
not: the turn-2 hit covers every block before the point where the template changed the earlier
reply, and /v1/cache/explain names that point and the cause."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from live_server import start_server, with_template
from server_prompts import SYSTEM_PROMPT

from promptcache.model.tokenizer import Tokenizer
from promptcache.server.chat import ChatRenderer, Turn
from promptcache.server.settings import ServerSettings

# A reply as a model writes it: starts with a word, not with whitespace.
WORDS = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=40)
REPLY = st.builds(lambda head, tail: head + tail, st.text("ABCdef", min_size=1, max_size=3), WORDS)

# Qwen3's rule, reduced: an assistant turn before the last one keeps only what follows </think>.
DROPS_REASONING = """{%- for message in messages %}
{%- if message.role == 'assistant' %}
{%- set content = message.content %}
{%- if not loop.last and '</think>' in content %}{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}
{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""


@pytest.fixture(scope="module")
def smollm2(tiny_llama_dir):
    return ChatRenderer(Tokenizer.from_dir(tiny_llama_dir))


@settings(max_examples=40, deadline=None)
@given(system=WORDS, turns=st.lists(st.tuples(WORDS, REPLY), min_size=1, max_size=4), nxt=WORDS)
def test_smollm2_rerenders_every_turn_token_identically(smollm2, system, turns, nxt):
    conversation = [Turn("system", system)]
    for question, reply in turns:
        conversation.append(Turn("user", question))
        before = smollm2.render(conversation).tokens
        conversation.append(Turn("assistant", reply))
        after = smollm2.render([*conversation, Turn("user", nxt)]).tokens
        assert after[:len(before)] == before


@pytest.fixture(scope="module")
def reasoning_server(tiny_llama_dir, tmp_path_factory):
    directory = with_template(tiny_llama_dir, tmp_path_factory.mktemp("qwen-style"), DROPS_REASONING)
    server = start_server(ServerSettings(model=str(directory), default_max_tokens=4))
    yield server
    server.stop()


def test_dropped_reasoning_ends_the_hit_where_the_template_changed_and_explain_names_it(reasoning_server):
    server = reasoning_server
    turn1 = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Which rule is first?"}]
    reply = "<think>" + "Let me look at the rules one by one. " * 6 + "</think>Rule 0."
    turn2 = [*turn1, {"role": "assistant", "content": reply}, {"role": "user", "content": "And the last?"}]
    chat = lambda messages: httpx.post(server.base_url + "/chat/completions", timeout=60, json={  # noqa: E731
        "model": server.model, "messages": messages, "max_tokens": 1, "temperature": 0}).json()["usage"]
    first = chat(turn1)
    # What the cache could hold for turn 2: every block of turn 1's prompt up to the assistant header.
    renderer = ChatRenderer(server.engine.tokenizer)
    changed_at = len(renderer.render([Turn(m["role"], m["content"]) for m in turn1]).tokens)
    why = httpx.post(server.url + "/v1/cache/explain", json={"model": server.model, "messages": turn2}).json()
    second = chat(turn2)
    assert second["prompt_tokens_details"]["cached_tokens"] == why["cached_tokens"] == changed_at // 16 * 16
    assert first["prompt_tokens"] == changed_at
    # The cache holds whole blocks: the prompt leaves it in the block where the reply begins.
    assert changed_at - 16 < why["divergence"]["token"] <= changed_at
    assert "drops earlier reasoning" in why["cause"] and "message 2" in why["cause"]
