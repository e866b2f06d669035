"""Tool-call replies cut by max_tokens, and how many calls a grammar allows, in both tool
formats (generic JSON and Hermes / Qwen blocks): the parsers against every cut of generated
replies (hypothesis), the grammars against SmolLM2's tokenizer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.engine.structured.spec import StructureSpec
from promptcache.server.structured import native
from promptcache.server.structured import tools as generic
from promptcache.server.structured.formats import from_response_format
from promptcache.server.structured.tools import MAX_PARALLEL_CALLS, Tool, ToolCall, ToolChoice

names = st.text(st.sampled_from("abcxyz_"), min_size=1, max_size=6)
values = st.one_of(st.integers(-99, 99), st.booleans(), st.none(), st.text(max_size=6))
arguments = st.dictionaries(st.text(st.sampled_from("pqr"), min_size=1, max_size=3), values, max_size=3)
calls = st.lists(st.builds(ToolCall, names, arguments), min_size=1, max_size=4)


def _ends(text: str, calls: list[ToolCall]) -> list[int]:
    """Where each call's JSON object ends in `text`, found by its own serialization."""
    ends, at = [], 0
    for call in calls:
        body = generic.dumps({"name": call.name, "arguments": call.arguments})
        at = text.index(body, at) + len(body)
        ends.append(at)
    return ends


@pytest.mark.parametrize("form", [generic, native], ids=["generic", "native"])
@settings(max_examples=150, deadline=None)
@given(calls=calls, data=st.data())
def test_a_cut_reply_keeps_exactly_the_calls_that_closed(form, calls, data):
    text = form.assistant_text(calls, None)
    cut = data.draw(st.integers(0, len(text)))
    kept, content = form.parse_cut(text[:cut])
    assert kept == [c for c, end in zip(calls, _ends(text, calls)) if end <= cut]
    assert content is None  # the format itself never becomes text


def test_cut_free_text_is_its_text_so_far():
    assert native.parse_cut("Free text, cut") == ([], "Free text, cut")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=30), st.data())
def test_a_cut_answer_is_its_text_so_far(answer, data):
    text = generic.assistant_text([], answer)
    cut = data.draw(st.integers(0, len(text)))
    kept, so_far = generic.parse_cut(text[:cut])
    assert kept == []
    assert so_far is None or answer.startswith(so_far)
    if cut == len(text):
        assert so_far == answer


WEATHER = Tool("weather", "", {"type": "object", "properties": {"city": {"enum": ["Rome", "Oslo"]}},
                               "required": ["city"], "additionalProperties": False})
CLOCK = Tool("clock", "", {"type": "object", "properties": {}, "additionalProperties": False})
ROME = ToolCall("weather", {"city": "Rome"})


def _accepts(compiler, tokenizer, spec: StructureSpec, text: str) -> bool:
    matcher = compiler.compile(spec).new_matcher()
    return all(matcher.consume_token(t) for t in tokenizer.encode(text, add_special_tokens=False)) \
        and matcher.is_accepting()


@pytest.mark.parametrize("form", [generic, native], ids=["generic", "native"])
def test_a_named_choice_allows_exactly_one_call_and_parallel_calls_are_bounded(compiler, tokenizer, form):
    def allows(choice: ToolChoice, n: int) -> bool:
        reply = form.assistant_text([ROME] * n, None)
        return _accepts(compiler, tokenizer, form.grammar([WEATHER, CLOCK], choice), reply)

    for one in (ToolChoice("named", "weather"), ToolChoice("named", "weather", parallel=False),
                ToolChoice("required", parallel=False)):
        assert allows(one, 1) and not allows(one, 2)
    parallel = ToolChoice("required")
    assert allows(parallel, MAX_PARALLEL_CALLS) and not allows(parallel, MAX_PARALLEL_CALLS + 1)
    # a named tool is the only one callable
    assert not _accepts(compiler, tokenizer, form.grammar([WEATHER, CLOCK], ToolChoice("named", "weather")),
                        form.assistant_text([ToolCall("clock", {})], None))


def test_json_object_with_a_schema_is_held_to_the_schema(compiler, tokenizer):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False, "uniqueItems": True}
    spec = from_response_format({"type": "json_object", "schema": schema})
    assert spec.kind == "json_schema" and json.loads(spec.source) == schema and not spec.strict
    assert _accepts(compiler, tokenizer, spec, '{"ok": true}')
    assert not _accepts(compiler, tokenizer, spec, '{"no": 1}')
    assert any("uniqueItems" in w for w in compiler.compile(spec).warnings)  # named, not silent
    assert from_response_format({"type": "json_object"}).kind == "json_object"
