"""Our chat template rendering must equal transformers' byte for byte: the rendered prompt is
what gets tokenized and cached, so any difference is a cache miss against other clients."""

from __future__ import annotations

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from promptcache.model.chat_template import ChatTemplate
from promptcache.model.errors import ModelError
from promptcache.model.tokenizer import Tokenizer

SYSTEM = {"role": "system", "content": "You are terse."}
CONVERSATIONS = {
    "system+user": [SYSTEM, {"role": "user", "content": "Hi!"}],
    "no system": [{"role": "user", "content": "What is 2+2?"}],
    "multi-turn": [
        SYSTEM,
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another, in 中文 😀"},
    ],
    "ends with assistant": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b\n\n  c"}],
    "empty content": [{"role": "user", "content": ""}],
}


@pytest.mark.slow
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_smollm2_template_matches_transformers(smollm2_tokenizer, smollm2_hf_tokenizer, name, add_generation_prompt):
    messages = CONVERSATIONS[name]
    expected = smollm2_hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected


# Exercises every helper transformers puts in the environment.
FEATURE_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(count=0) %}"
    "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
    "{% set ns.count = ns.count + 1 %}"
    "  {{ m.role }}: {{ m.content | tojson }}\n"
    "{% if loop.index > 10 %}{% break %}{% endif %}{% endfor %}"
    "{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}"
    "{{ dict(a=1) | tojson }} n={{ ns.count }} year={{ strftime_now('%Y')[:2] }}"
    "{% if add_generation_prompt %}<go>{% endif %}{{ eos_token }}"
)


def test_template_features_match_transformers():
    messages = [
        {"role": "user", "content": 'quote " <html> & ünïcode'},
        {"role": "skip", "content": "x"},
        {"role": "assistant", "content": "ok"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    special = {"bos_token": "<s>", "eos_token": "</s>"}
    ours = ChatTemplate(FEATURE_TEMPLATE, special).render(messages, add_generation_prompt=True, tools=tools)
    (theirs,), _ = render_jinja_template(
        [messages], tools=tools, chat_template=FEATURE_TEMPLATE, add_generation_prompt=True, **special
    )
    assert ours == theirs
    assert "ünïcode" in ours and "<go></s>" in ours


def test_raise_exception_becomes_model_error():
    template = ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}")
    with pytest.raises(ModelError, match="user first"):
        template.render([{"role": "assistant", "content": "x"}])


def test_sandbox_blocks_attribute_escape():
    template = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ModelError):
        template.render([])


def test_bad_template_is_model_error():
    with pytest.raises(ModelError, match="does not compile"):
        ChatTemplate("{% for %}")


def test_no_template_is_model_error(smollm2_tokenizer):
    bare = Tokenizer(smollm2_tokenizer.backend, bos_token_id=None, eos_token_ids=(), add_bos=False, chat_template=None)
    with pytest.raises(ModelError, match="no chat template"):
        bare.apply_chat_template([{"role": "user", "content": "hi"}])
