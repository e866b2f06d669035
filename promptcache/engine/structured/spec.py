"""What a request asks its output to be, before anything is compiled.

A `StructureSpec` is plain data: the kind of constraint and its source text. The server builds
one from a dialect's field (OpenAI's `response_format`, vLLM's `structured_outputs`, a tool
list) and the engine compiles it. Size and nesting limits are checked here, on the source, so
a hostile schema is refused before any parser or compiler runs (`check_limits`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from promptcache.engine.api import EngineInputError

Kind = Literal["json_object", "json_schema", "regex", "choice", "lark", "gbnf"]

# Refused before compiling: a schema or grammar past these is a 400 naming the limit.
MAX_SOURCE_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_CHOICES = 256


class GrammarError(EngineInputError):
    """The constraint cannot be compiled or is past a limit; `param` names the request field."""


@dataclass(frozen=True)
class StructureSpec:
    """One request's output constraint. `source` is the schema as JSON text (json_schema), the
    regex, the choices as a JSON list, or the grammar text; `strict` makes unsupported JSON
    Schema keywords an error instead of warnings; `param` is the request field it came from."""

    kind: Kind
    source: str = ""
    strict: bool = True
    param: str = "response_format"

    def check_limits(self) -> None:
        if len(self.source.encode()) > MAX_SOURCE_BYTES:
            raise GrammarError(f"the {self.kind} is longer than the limit of {MAX_SOURCE_BYTES} bytes", self.param)
        if self.kind == "json_schema":
            depth = _depth(_load_json(self.source, self.param, "schema"))
            if depth > MAX_SCHEMA_DEPTH:
                raise GrammarError(f"the schema nests deeper than the limit of {MAX_SCHEMA_DEPTH} levels", self.param)
        if self.kind == "choice":
            choices = _load_json(self.source, self.param, "choice")
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                raise GrammarError("choice must be a non-empty list of strings", self.param)
            if len(choices) > MAX_CHOICES:
                raise GrammarError(f"choice has more than the limit of {MAX_CHOICES} entries", self.param)


def _load_json(text: str, param: str, what: str):
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise GrammarError(f"the {what} nests deeper than the limit of {MAX_SCHEMA_DEPTH} levels", param) from exc
    except ValueError as exc:
        raise GrammarError(f"the {what} is not valid JSON", param) from exc


def _depth(value, level: int = 0) -> int:
    """Nesting depth, stopping as soon as it passes the limit (no recursion past it)."""
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level
