"""Prompt templates against a simple reference: rendering is one pass of substitution (values
never expanded again), the static prefix is what every rendering starts with, and malformed
placeholders are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptcache.server.prompts.template import TemplateError, parse

NAMES = st.sampled_from(["a", "b", "name", "x_1"])
# Literal text that cannot form a placeholder by itself (single braces are fine).
LITERALS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).filter(lambda t: "{{" not in t and "}}" not in t)
PIECES = st.lists(st.one_of(LITERALS, NAMES.map(lambda n: ("var", n))), max_size=8)
VALUES = st.fixed_dictionaries({n: st.text(max_size=8) for n in ["a", "b", "name", "x_1"]})


def joined(pieces) -> list:
    """The pieces with a space between two that would otherwise put "{{" or "}}" across their
    boundary: then the variables are exactly the ("var", name) pieces."""
    out = []
    for p in pieces:
        text = "{{" + p[1] + "}}" if isinstance(p, tuple) else p
        last = out[-1] if out else None
        last_text = "{{" + last[1] + "}}" if isinstance(last, tuple) else (last or "")
        if last_text and text and last_text[-1] == text[0] and text[0] in "{}":
            out.append(" ")
        out.append(p)
    return out


def text_of(pieces) -> str:
    return "".join("{{" + p[1] + "}}" if isinstance(p, tuple) else p for p in pieces)


@given(PIECES, VALUES)
def test_rendering_is_one_pass_of_substitution(pieces, values):
    pieces = joined(pieces)
    text = text_of(pieces)
    if not text:
        return
    template = parse(text, max_chars=10_000, max_variables=64)
    assert template.variables == tuple(dict.fromkeys(p[1] for p in pieces if isinstance(p, tuple)))
    used = {n: values[n] for n in template.variables}
    rendered = template.render(used)
    assert rendered == "".join(used[p[1]] if isinstance(p, tuple) else p for p in pieces)  # values not re-expanded
    assert rendered.startswith(template.static_prefix)
    first = next((i for i, p in enumerate(pieces) if isinstance(p, tuple)), len(pieces))
    assert template.static_prefix == text_of(pieces[:first])


@pytest.mark.parametrize("text", ["{{user name}}", "{{ a.b }}", "{{1x}}", "{{}}", "Hi {{a-b}} there"])
def test_malformed_placeholders_are_refused(text):
    with pytest.raises(TemplateError):
        parse(text, max_chars=100, max_variables=8)


def test_braces_that_are_not_placeholders_stay_text():
    template = parse('Reply as {"a": {"b": 1}} for {{who}}.', max_chars=100, max_variables=8)
    assert template.variables == ("who",)
    assert template.render({"who": "{{who}}"}) == 'Reply as {"a": {"b": 1}} for {{who}}.'
    assert template.static_prefix == 'Reply as {"a": {"b": 1}} for '


# Chat templates of other families, for the warm prefix: Llama 3's headers with trimmed content,
# and Mistral's, which folds the system prompt into the first user turn and refuses any order of
# roles but user/assistant alternation.
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
MISTRAL = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\n\n' %}"
           "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
           "{% for m in msgs %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('roles must alternate') }}{% endif %}{% if m['role'] == 'user' %}[INST] "
           "{% if loop.first %}{{ sys }}{% endif %}{{ m['content'] }} [/INST]{% else %}{{ m['content'] }}</s>{% endif %}"
           "{% endfor %}")


@pytest.mark.parametrize("family", ["smollm2", "llama3", "mistral"])
def test_the_warm_prefix_starts_every_rendering(family, tiny_llama_dir, tmp_path):
    """The tokens warmed for a template are the first tokens of its requests, whatever the
    values (including ones the tokenizer merges with the text before them) and the turns after."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from live_server import with_template

    from promptcache.model.tokenizer import Tokenizer
    from promptcache.server.chat import ChatRenderer, Turn
    from promptcache.server.prompts.warm import prefix_tokens

    directory = tiny_llama_dir if family == "smollm2" else with_template(
        tiny_llama_dir, tmp_path / family, LLAMA3 if family == "llama3" else MISTRAL)
    renderer = ChatRenderer(Tokenizer.from_dir(Path(directory)))
    template = parse("You answer for Acme. Policy: be brief. The customer is {{customer}}, about {{topic}}.",
                     max_chars=1000, max_variables=8)
    warm = prefix_tokens(renderer, template)
    static = len(renderer.tokenizer.encode(template.static_prefix, add_special_tokens=False))
    assert len(warm) >= static - 1  # all of the static text but a token the value may merge with
    for customer in ("Ann", " Bo", "7", "\nZed", "{{topic}}", "Éva"):
        text = template.render({"customer": customer, "topic": "refunds"})
        for after in ([Turn("user", "Where is my parcel?")], [Turn("user", "Hi"), Turn("assistant", "Hello")]):
            assert renderer.render([Turn("system", text), *after]).tokens[:len(warm)] == warm, (customer, after)
