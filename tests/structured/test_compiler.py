"""Compiling output constraints: limits before work, strictness, errors naming the problem, and
the compiled-grammar cache."""

from __future__ import annotations

import json

import pytest

from promptcache.engine.structured.compiler import ENTRY_OVERHEAD_BYTES, GrammarCompiler
from promptcache.engine.structured.spec import MAX_SCHEMA_DEPTH, MAX_SOURCE_BYTES, GrammarError, StructureSpec


def schema(obj, strict=True) -> StructureSpec:
    return StructureSpec("json_schema", json.dumps(obj), strict=strict)


def test_strict_schema_with_an_unimplemented_keyword_is_refused_naming_it(compiler):
    with pytest.raises(GrammarError, match="uniqueItems") as err:
        compiler.compile(schema({"type": "array", "uniqueItems": True}))
    assert err.value.param == "response_format"


def test_non_strict_schema_compiles_and_reports_what_it_ignores(compiler):
    compiled = compiler.compile(schema({"type": "array", "uniqueItems": True}, strict=False))
    assert any("uniqueItems" in w for w in compiled.warnings)


@pytest.mark.parametrize("spec, words", [
    (StructureSpec("regex", "[a-z"), "regex"),
    (StructureSpec("json_schema", "[1, 2]"), "JSON object"),
    (StructureSpec("json_schema", "{not json"), "not valid JSON"),
    (StructureSpec("choice", "[]"), "non-empty list"),
    (StructureSpec("choice", json.dumps(["a"] * 300)), "limit of 256"),
    (StructureSpec("lark", "start: undefined_rule"), "lark"),
    (StructureSpec("json_schema", json.dumps({"type": "string", "format": "no-such-format"})), "format"),
])
def test_bad_constraints_are_refused_with_a_reason(compiler, spec, words):
    with pytest.raises(GrammarError, match=words):
        compiler.compile(spec)


def test_size_and_depth_limits_are_checked_before_any_parsing(compiler):
    deep = "[" * 100_000 + "]" * 100_000  # would blow the recursion limit of a naive parser
    with pytest.raises(GrammarError, match=f"limit of {MAX_SOURCE_BYTES} bytes"):
        compiler.compile(StructureSpec("json_schema", deep))
    nested = {"type": "object"}
    for _ in range(MAX_SCHEMA_DEPTH):
        nested = {"type": "object", "properties": {"a": nested}}
    with pytest.raises(GrammarError, match=f"limit of {MAX_SCHEMA_DEPTH} levels"):
        compiler.compile(schema(nested))
    with pytest.raises(GrammarError, match="levels"):
        compiler.compile(StructureSpec("json_schema", "[" * 5000 + "]" * 5000))


def test_a_repeated_spec_is_compiled_once(tokenizer):
    compiler = GrammarCompiler(tokenizer)
    spec = schema({"type": "object", "properties": {"x": {"type": "integer"}}})
    first = compiler.compile(spec)
    assert compiler.compile(spec) is first
    assert compiler.stats()["hits"] == 1 and compiler.stats()["misses"] == 1
    # The same text under another strictness is another grammar.
    assert compiler.compile(StructureSpec(spec.kind, spec.source, strict=False)) is not first


def test_the_cache_stays_within_its_byte_budget(tokenizer):
    compiler = GrammarCompiler(tokenizer, budget_bytes=3 * ENTRY_OVERHEAD_BYTES + 10_000)
    for n in range(6):
        compiler.compile(StructureSpec("regex", f"a{{{n + 1}}}"))
    stats = compiler.stats()
    assert stats["entries"] < 6 and stats["bytes"] <= stats["budget_bytes"]
    # The most recent survives; the oldest was evicted and is compiled anew.
    before = stats["misses"]
    compiler.compile(StructureSpec("regex", "a{6}"))
    assert compiler.stats()["misses"] == before
    compiler.compile(StructureSpec("regex", "a{1}"))
    assert compiler.stats()["misses"] == before + 1
