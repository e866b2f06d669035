"""Gemini's OpenAPI-subset Schema -> JSON Schema (server/gemini/openapi.py), as properties over
generated schemas: the result is a valid JSON Schema that accepts exactly the values Gemini's
schema describes (a value built to fit it validates; a value of another type does not), the
keys come in propertyOrdering's order, and snake_case spellings read like camelCase ones."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.server.errors import APIError
from promptcache.server.gemini.openapi import MAX_DEPTH, json_schema

NAMES = st.text("abcdefgh", min_size=1, max_size=4)
LEAVES = st.sampled_from(["STRING", "INTEGER", "NUMBER", "BOOLEAN"]).map(lambda t: {"type": t})


def _objects(children):
    def build(props: dict, nullable: bool, order: bool):
        schema = {"type": "OBJECT", "properties": props, "required": sorted(props)}
        if order:
            schema["propertyOrdering"] = sorted(props, reverse=True)
        if nullable:
            schema["nullable"] = True
        return schema
    return st.builds(build, st.dictionaries(NAMES, children, min_size=1, max_size=3), st.booleans(), st.booleans())


SCHEMAS = st.recursive(LEAVES, lambda children: st.one_of(
    _objects(children), children.map(lambda item: {"type": "ARRAY", "items": item, "minItems": 1})), max_leaves=8)
SAMPLES = {"string": "x", "integer": 3, "number": 1.5, "boolean": True}


def sample(schema: dict):
    """A value Gemini's schema describes: every property, one item per array."""
    kind = schema["type"]
    if kind == "OBJECT":
        return {name: sample(sub) for name, sub in schema["properties"].items()}
    if kind == "ARRAY":
        return [sample(schema["items"])]
    return SAMPLES[kind.lower()]


def snake(schema):
    if isinstance(schema, dict):
        return {("property_ordering" if k == "propertyOrdering" else "min_items" if k == "minItems" else k): snake(v)
                for k, v in schema.items()}
    return schema


@settings(max_examples=150, deadline=None)
@given(SCHEMAS)
def test_the_json_schema_accepts_what_the_gemini_schema_describes(schema):
    converted = json_schema(schema, "responseSchema")
    jsonschema.Draft202012Validator.check_schema(converted)
    value = sample(schema)
    jsonschema.validate(value, converted)
    wrong = "text" if not isinstance(value, str) else 7
    assert not jsonschema.Draft202012Validator(converted).is_valid(wrong)
    assert json_schema(snake(schema), "responseSchema") == converted
    if schema["type"] == "OBJECT":
        assert not jsonschema.Draft202012Validator(converted).is_valid({**value, "extra": 1})
        assert jsonschema.Draft202012Validator(converted).is_valid(None) == bool(schema.get("nullable"))
        if "propertyOrdering" in schema:
            assert list(converted["properties"]) == schema["propertyOrdering"]


def test_unknown_keys_and_deep_nesting_are_refused_by_name():
    with pytest.raises(APIError, match=r"responseSchema\.properties\.a\.oneOf"):
        json_schema({"type": "OBJECT", "properties": {"a": {"oneOf": []}}}, "responseSchema")
    deep: dict = {"type": "STRING"}
    for _ in range(MAX_DEPTH + 1):
        deep = {"type": "ARRAY", "items": deep}
    with pytest.raises(APIError, match="nests more than"):
        json_schema(deep, "responseSchema")
    with pytest.raises(APIError, match="propertyOrdering"):
        json_schema({"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "propertyOrdering": ["b"]}, "s")
