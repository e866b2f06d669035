"""Chat rendering with the real SmolLM2 tokenizer: prompt tokens, no doubled BOS, and roles."""

from __future__ import annotations

import pytest

from promptcache.model.chat_template import ChatTemplate
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


BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bos_adding_renderer(real: Tokenizer, template_writes_bos: bool) -> ChatRenderer:
    """The real vocabulary, but a tokenizer that adds BOS and a template that may write it too
    (as Llama 3's does): the combination that doubles BOS if nobody looks."""
    bos_id = real.token_to_id("<|endoftext|>")
    source = BOS_TEMPLATE if template_writes_bos else BOS_TEMPLATE.removeprefix("{{ bos_token }}")
    template = ChatTemplate(source, {"bos_token": "<|endoftext|>"})
    tok = Tokenizer(real.backend, bos_token_id=bos_id, eos_token_ids=[bos_id], add_bos=True, chat_template=template)
    return ChatRenderer(tok)


@pytest.mark.parametrize("template_writes_bos", [True, False])
def test_exactly_one_bos_with_a_tokenizer_that_adds_it(renderer, template_writes_bos):
    r = bos_adding_renderer(renderer.tokenizer, template_writes_bos)
    bos = r.tokenizer.bos_token_id
    assert bos is not None and r.tokenizer.add_bos
    prompt = r.render(msgs(("system", "S"), ("user", "U")))
    assert prompt.tokens[0] == bos and prompt.tokens[1] != bos
    assert prompt.tokens.count(bos) == 1
    assert len(prompt.roles) == len(prompt.tokens) and prompt.roles[0] == "system"
    assert r.render_prefix(msgs(("system", "S"))).count(bos) == 1


class CountingTokenizer:
    """Counts what rendering costs: template renders, and characters tokenized."""

    def __init__(self, inner):
        self.inner, self.renders, self.encoded_chars = inner, 0, 0
        self.bos_token_id = inner.bos_token_id

    def apply_chat_template(self, messages, add_generation_prompt=True, tools=None):
        self.renders += 1
        return self.inner.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tools=tools)

    def encode(self, text, add_special_tokens=True):
        self.encoded_chars += len(text)
        return self.inner.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids):
        return self.inner.decode(ids)


@pytest.mark.parametrize("n", [10, 2000])
def test_render_is_one_template_call_and_linear_tokenization(renderer, n):
    counting = CountingTokenizer(renderer.tokenizer)
    r = ChatRenderer(counting)
    counting.renders = counting.encoded_chars = 0  # the probe at construction is once per server
    conversation = [ChatMessage(role="user" if i % 2 == 0 else "assistant", content="x") for i in range(n)]
    prompt = r.render(conversation)
    assert counting.renders == 1
    assert counting.encoded_chars <= 2 * len(prompt.text)  # the prompt once, its message regions once
    assert prompt.roles.count("user") >= n // 2 and len(prompt.roles) == len(prompt.tokens)
