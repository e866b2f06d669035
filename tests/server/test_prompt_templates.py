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
