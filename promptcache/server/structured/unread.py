"""Keys of the free-form structured fields that nothing reads, as paths for `x-ignored-fields`.

`tools`, `tool_choice`, `response_format` and the Responses API's `text` are JSON objects, not
request models, so the walk that names unknown body fields (core/lenient.py) does not see
inside them. Each key the structure code reads is listed here; any other key that is sent
(and is not null) is named, as an unknown body field is, so that a documented key this server
has no use for (a schema's `description`, `text.verbosity`) is never ignored in silence.
"""

from __future__ import annotations

from typing import Any

# A function tool: chat nests it under `function`, the Responses API does not.
_TOOL = frozenset({"type", "function", "name", "description", "parameters", "strict"})
_FUNCTION = frozenset({"name", "description", "parameters", "strict"})
# A named tool_choice: chat's {"type", "function": {"name"}}, Responses' {"type", "name"}.
_CHOICE = frozenset({"type", "function", "name"})
_CHOICE_FUNCTION = frozenset({"name"})
# response_format (chat) and text.format (Responses, the json_schema body flattened).
_FORMAT = {
    "text": frozenset({"type"}),
    "json_object": frozenset({"type", "schema"}),  # `schema`: llama.cpp's and vLLM's extension
    "json_schema": frozenset({"type", "json_schema", "name", "schema", "strict"}),
}
_JSON_SCHEMA = frozenset({"name", "schema", "strict"})
_TEXT = frozenset({"format"})


def unread(value: Any, known: frozenset, path: str) -> list[str]:
    """The paths of the keys of `value` (a JSON object) outside `known` that were sent, not null."""
    if not isinstance(value, dict):
        return []
    return [f"{path}.{key}" for key, item in value.items() if key not in known and item is not None]


def tools_unread(tools: Any, param: str = "tools") -> list[str]:
    if not isinstance(tools, list):
        return []
    out = []
    for i, entry in enumerate(tools):
        out += unread(entry, _TOOL, f"{param}[{i}]")
        if isinstance(entry, dict):
            out += unread(entry.get("function"), _FUNCTION, f"{param}[{i}].function")
    return out


def choice_unread(choice: Any, param: str = "tool_choice") -> list[str]:
    if not isinstance(choice, dict):
        return []
    return unread(choice, _CHOICE, param) + unread(choice.get("function"), _CHOICE_FUNCTION, f"{param}.function")


def format_unread(value: Any, param: str = "response_format") -> list[str]:
    if not isinstance(value, dict) or value.get("type") not in _FORMAT:
        return []  # an unknown type is a 400 (formats.py)
    out = unread(value, _FORMAT[value["type"]], param)
    return out + unread(value.get("json_schema"), _JSON_SCHEMA, f"{param}.json_schema")


def text_unread(text: Any, param: str = "text") -> list[str]:
    """The Responses API's `text`: its `format`, and nothing else is read."""
    if not isinstance(text, dict):
        return []
    return unread(text, _TEXT, param) + format_unread(text.get("format"), f"{param}.format")
