"""Request bodies that accept fields they do not know, and remember which, so that the server
can name them to the caller (core/ignored.py) instead of dropping them in silence.

The official clients send optional knobs of newer API versions, so an unknown field cannot be a
400 by default without breaking drop-in use. Pydantic's `extra="ignore"` forgets the names, and
`extra="allow"` would carry the values into every `model_dump` (stored items, echoed input); so a
body keeps only the names, in a private attribute set while it is validated, and
`unknown_fields` walks a validated body for them with the path where each was sent
(`messages[0].foo`).

The names are client strings bound for a response header and a log line: each path is cut to
`MAX_CHARS` characters of [A-Za-z0-9_.[]-] (anything else becomes `_`), and at most `MAX_NAMES`
are kept, however many were sent.
"""

from __future__ import annotations

import functools
import re
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

MAX_NAMES = 16  # names kept per request; the count covers all of them
MAX_CHARS = 64  # characters kept of one path
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\[\]-]")


def sanitized(path: str) -> str:
    """`path` as it may appear in a header or a log line: 64 safe characters at most."""
    return _UNSAFE.sub("_", path[:MAX_CHARS]) or "_"


class LenientBody(BaseModel):
    """A body that ignores fields it does not define but notes their names.

    `NEUTRAL_FIELDS`: names a dialect defines and this server refuses unless they are set to
    the value that changes nothing (core/fields.py `refusing`); accepted at that value, they are
    not unknown."""

    model_config = ConfigDict(extra="ignore")
    NEUTRAL_FIELDS: ClassVar[frozenset[str]] = frozenset()
    _unknown: tuple[str, ...] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _note_unknown(cls, data: Any, handler) -> Any:
        body = handler(data)
        if isinstance(data, dict) and isinstance(body, LenientBody):
            known, neutral = type(body).model_fields, type(body).NEUTRAL_FIELDS
            unknown = tuple(str(k) for k in data if k not in known and k not in neutral)
            if unknown:
                body._unknown = unknown
        return body


def unknown_fields(body: BaseModel) -> tuple[list[str], int]:
    """The sanitized paths of the fields `body` and the bodies nested in it did not know (the
    first `MAX_NAMES`, in the order sent), and how many there were in all."""
    names: list[str] = []
    count = 0

    def walk(value: Any, path: str) -> None:
        nonlocal count
        if isinstance(value, BaseModel):
            for key in value._unknown if isinstance(value, LenientBody) else ():
                count += 1
                if len(names) < MAX_NAMES:
                    names.append(sanitized(_join(path, key)))
            for name in _nested_fields(type(value)):
                walk(getattr(value, name), _join(path, name))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, _join(path, str(key)))

    walk(body, "")
    return names, count


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@functools.cache
def _nested_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `cls` whose type can hold a LenientBody: the only ones worth walking (a
    list of 100k token ids or a tool's JSON schema is skipped unread)."""
    return tuple(name for name, field in cls.model_fields.items() if _holds_body(field.annotation))


def _holds_body(annotation: Any, seen: frozenset = frozenset()) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if issubclass(annotation, LenientBody):
            return True
        return annotation not in seen and any(  # a strict body may hold a lenient one
            _holds_body(field.annotation, seen | {annotation}) for field in annotation.model_fields.values())
    return any(_holds_body(arg, seen) for arg in typing.get_args(annotation) if not isinstance(arg, (str, int)))
