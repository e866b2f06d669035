"""Gemini's Schema (an OpenAPI 3.0 subset with upper-case types) -> JSON Schema, for the
constrained decoder: `responseSchema` and a function's `parameters` are read through it.

`type: "STRING"` becomes `"string"`, `nullable: true` adds `"null"` to the type, an OBJECT
holds only the properties it lists (Gemini's Schema has no additionalProperties: its decoder
writes no others), `propertyOrdering` orders `properties` (the order the reply's keys are
written in), and
`example` and the numeric `format`s (int32, double: widths JSON does not have) are annotations
only. Any key that is not a field of Gemini's Schema is a 400 naming it, so nothing asked for is
silently left unenforced. Snake_case spellings (`property_ordering`, `any_of`) are read too, as
google-genai sends some of them.
"""

from __future__ import annotations

from typing import Any

from pydantic.alias_generators import to_camel

from promptcache.server.errors import bad_request

MAX_DEPTH = 32  # nesting past this is refused here, before any recursion could run deep
TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
KEPT = {"title", "description", "enum", "maxItems", "minItems", "required", "minProperties", "maxProperties",
        "minLength", "maxLength", "pattern", "default", "minimum", "maximum"}
ANNOTATIONS = {"example", "propertyOrdering"}
FORMATS = {"date-time"}  # the one Gemini format JSON Schema enforces; the others are annotations


def json_schema(schema: Any, param: str, depth: int = 0) -> dict:
    """`schema` (Gemini's Schema, as sent) as a JSON Schema."""
    if not isinstance(schema, dict):
        raise bad_request(f"{param} must be a Schema object", param=param)
    if depth > MAX_DEPTH:
        raise bad_request(f"{param} nests more than {MAX_DEPTH} schemas deep", param=param)
    fields = {to_camel(k) if "_" in k else k: v for k, v in schema.items()}
    out: dict[str, Any] = {}
    for key, value in fields.items():
        where = f"{param}.{key}"
        if key == "type":
            kind = value.upper() if isinstance(value, str) else None
            if kind not in TYPES:
                raise bad_request(f"{where} must be one of {', '.join(sorted(TYPES))}", param=where)
            if kind != "TYPE_UNSPECIFIED":
                out["type"] = kind.lower()
        elif key == "properties":
            if not isinstance(value, dict):
                raise bad_request(f"{where} must map names to schemas", param=where)
            out[key] = {name: json_schema(v, f"{where}.{name}", depth + 1) for name, v in value.items()}
        elif key == "items":
            out[key] = json_schema(value, where, depth + 1)
        elif key == "anyOf":
            if not isinstance(value, list) or not value:
                raise bad_request(f"{where} must be a list of schemas", param=where)
            out[key] = [json_schema(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        elif key == "format":
            if value in FORMATS:
                out[key] = value
        elif key in KEPT:
            out[key] = value
        elif key not in ANNOTATIONS and key != "nullable":
            raise bad_request(f"{where} is not a field of Gemini's Schema", param=where)
    _order(out, fields.get("propertyOrdering"), param)
    if out.get("type") == "object":  # Gemini's objects hold their listed properties only
        out["additionalProperties"] = False
    if fields.get("nullable") is True:
        _nullable(out)
    return out


def _order(out: dict, ordering: Any, param: str) -> None:
    """`properties` in `propertyOrdering`'s order, any it leaves out after them."""
    if ordering is None or "properties" not in out:
        return
    props = out["properties"]
    if not isinstance(ordering, list) or any(name not in props for name in ordering):
        raise bad_request(f"{param}.propertyOrdering must list names of its properties", param=param)
    out["properties"] = {**{name: props[name] for name in ordering}, **props}


def _nullable(out: dict) -> None:
    if "type" in out:
        out["type"] = [out["type"], "null"]
    if isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
