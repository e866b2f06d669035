"""Chat rendering with the real SmolLM2 tokenizer: prompt tokens, no doubled BOS, and roles."""

from __future__ import annotations

import pytest

from promptcache.model.tokenizer import Tokenizer
from promptcache.server.chat import ChatRenderer, prompt_from_completion
from promptcache.server.openai_schema import ChatMessage


@pytest.fixture(scope="module")
def renderer(tiny_llama_dir):
    return ChatRenderer(Tokenizer.from_dir(tiny_llama_dir))


def msgs(*pairs) -> list[ChatMessage]:
    return [ChatMessage(role=r, content=c) for r, c in pairs]


CONVERSATIONS = {
    "system+user": msgs(("system", "You are terse."), ("user", "Hi there")),
    "no system": msgs(("user", "Hello")),
    "multi-turn with tool": msgs(
        ("developer", "Rules."), ("user", "Q1"), ("assistant", "A1"), ("tool", "{\"x\": 1}"), ("user", "Q2")
    ),
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_prompt_is_the_full_render_with_one_role_per_token(renderer, name):
    messages = CONVERSATIONS[name]
    prompt = renderer.render(messages)
    tok = renderer.tokenizer
    assert prompt.tokens == tok.encode(prompt.text, add_special_tokens=False) or prompt.tokens == tok.encode(prompt.text)
    assert len(prompt.roles) == len(prompt.tokens)
    assert prompt.text.endswith("<|im_start|>assistant\n")
    assert prompt.roles[-1] == "assistant"  # the generation header
    if tok.bos_token_id is not None:  # (SmolLM2's BOS is <|im_start|>, so it recurs later)
        assert prompt.tokens[:2] != [tok.bos_token_id] * 2


def test_roles_follow_the_messages(renderer):
    prompt = renderer.render(CONVERSATIONS["multi-turn with tool"])
    # Roles change only at message boundaries and appear in conversation order.
    runs = [r for i, r in enumerate(prompt.roles) if i == 0 or prompt.roles[i - 1] != r]
    assert runs == ["system", "user", "assistant", "tool", "user", "assistant"]


def test_text_parts_join_and_developer_renders_as_system(renderer):
    parts = [ChatMessage(role="developer", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])]
    assert "<|im_start|>system\na\nb<|im_end|>" in renderer.render(parts).text


def test_prefix_render_is_a_prefix_of_every_longer_conversation(renderer):
    system = msgs(("system", "Shared rules. " * 20))
    prefix = renderer.render_prefix(system)
    full = renderer.render(system + msgs(("user", "anything")))
    assert full.tokens[: len(prefix)] == prefix


def test_completion_prompts(renderer):
    tok = renderer.tokenizer
    assert prompt_from_completion(tok, "hi") == prompt_from_completion(tok, ["hi"]) == tok.encode("hi")
    assert prompt_from_completion(tok, [5, 6]) == prompt_from_completion(tok, [[5, 6]]) == [5, 6]
