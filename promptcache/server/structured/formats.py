"""Output-format fields of each dialect -> one `StructureSpec` (or None: free text).

Every field is either honoured or refused with a 400 naming it: nothing is silently ignored.
The shapes follow the providers' references: OpenAI chat's `response_format`
(`text`, `json_object` (with llama.cpp's and vLLM's optional `schema`), `json_schema` with
`name`, `schema`, `strict`), the Responses API's
`text.format` (the same types, flattened: `{"type": "json_schema", "name", "schema", "strict"}`),
Anthropic's `output_config.format` and its beta spelling `output_format`
(`{"type": "json_schema", "schema"}`, always enforced), and vLLM's `structured_outputs`
extension (exactly one of `json`, `regex`, `choice`, `grammar`).
"""

from __future__ import annotations

import json
from typing import Any

from promptcache.engine.api import EngineInputError
from promptcache.engine.structured.spec import StructureSpec


def from_response_format(value: Any, param: str = "response_format") -> StructureSpec | None:
    """OpenAI chat's `response_format`; `flat` Responses-style objects are accepted too."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise EngineInputError(f"{param} must be an object with a 'type'", param)
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        # llama.cpp's and vLLM's extension: a `schema` beside json_object holds the object to
        # it, not strict, so a keyword the grammar cannot enforce is named in a header.
        schema = value.get("schema")
        if schema is None:
            return StructureSpec("json_object", strict=True, param=param)
        if not isinstance(schema, dict):
            raise EngineInputError(f"{param}.schema must be a JSON Schema object", param)
        return StructureSpec("json_schema", json.dumps(schema), strict=False, param=param)
    if kind == "json_schema":
        body = value.get("json_schema", value)  # chat nests it; Responses' text.format does not
        if not isinstance(body, dict) or not isinstance(body.get("schema"), dict):
            raise EngineInputError(f"{param}.json_schema.schema must be a JSON Schema object", param)
        strict = body.get("strict")
        return StructureSpec("json_schema", json.dumps(body["schema"]), strict=bool(strict), param=param)
    raise EngineInputError(f"{param}.type {kind!r} is not supported (text, json_object, json_schema)", param)


def from_json_output_format(value: Any, param: str = "output_config.format") -> StructureSpec | None:
    """Anthropic's JSON output format, `{"type": "json_schema", "schema": {...}}`, as GA
    `output_config.format` or the beta's top-level `output_format`. Anthropic has no lenient
    form, so the schema is strict: a keyword the grammar cannot enforce is a 400 naming it."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        raise EngineInputError(f"{param}.type must be 'json_schema'", param)
    unknown = [k for k in value if k not in ("type", "schema") and value[k] is not None]
    if unknown:
        raise EngineInputError(f"{param}.{unknown[0]} is not supported (type, schema)", param)
    if not isinstance(value.get("schema"), dict):
        raise EngineInputError(f"{param}.schema must be a JSON Schema object", param)
    return StructureSpec("json_schema", json.dumps(value["schema"]), strict=True, param=param)


_VLLM_KINDS = {"json": "json_schema", "regex": "regex", "choice": "choice", "grammar": "lark"}


def from_structured_outputs(value: Any, param: str = "structured_outputs") -> StructureSpec | None:
    """vLLM's `structured_outputs` extension: exactly one of json, regex, choice, grammar. A
    grammar may be Lark or GBNF; the grammar library reads both."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EngineInputError(f"{param} must be an object", param)
    given = [k for k in value if value[k] is not None]
    unknown = [k for k in given if k not in _VLLM_KINDS]
    if unknown:
        raise EngineInputError(f"{param}.{unknown[0]} is not supported (json, regex, choice, grammar)", param)
    if len(given) != 1:
        raise EngineInputError(f"{param} needs exactly one of json, regex, choice, grammar", param)
    key = given[0]
    source = value[key]
    if key == "json":
        source = source if isinstance(source, str) else json.dumps(source)
    elif key == "choice":
        if not isinstance(source, list):
            raise EngineInputError(f"{param}.choice must be a list of strings", param)
        source = json.dumps(source)
    elif not isinstance(source, str):
        raise EngineInputError(f"{param}.{key} must be a string", param)
    kind = "gbnf" if key == "grammar" and "::=" in source else _VLLM_KINDS[key]
    return StructureSpec(kind, source, strict=True, param=param)


def one_spec(*specs: StructureSpec | None) -> StructureSpec | None:
    """At most one output constraint per request: two fields asking for one is a 400."""
    given = [s for s in specs if s is not None]
    if len(given) > 1:
        raise EngineInputError(f"{given[0].param} and {given[1].param} cannot be combined", given[1].param)
    return given[0] if given else None
