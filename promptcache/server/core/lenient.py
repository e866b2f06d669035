"""Request bodies that accept fields they do not know, and remember which, so that the server
can name them to the caller (core/ignored.py) instead of dropping them in silence.

The official clients send optional knobs of newer API versions, so an unknown field cannot be a
400 by default without breaking drop-in use. Pydantic's `extra="ignore"` forgets the names; so a
body keeps them (`extra="allow"`, collected by pydantic's own validator: a Python validator per
body made a 200-message chat's validation 5 times slower) but never serializes them, so they
reach no stored item or echoed input, and nothing reads them but `unknown_fields`, which walks
a validated body for them with the path where each was sent (`messages[0].foo`). The same
walk names the declared fields a body was sent that no code acts on (core/handled.py).

The names are client strings bound for a response header and a log line: each path is cut to
`MAX_CHARS` characters of [A-Za-z0-9_.[]-] (anything else becomes `_`), and at most `MAX_NAMES`
are kept, however many were sent.
"""

from __future__ import annotations

import functools
import re
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer

from promptcache.server.core.handled import unhandled

MAX_NAMES = 16  # names kept per request; the count covers all of them
MAX_CHARS = 64  # characters kept of one path
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\[\]-]")


def sanitized(path: str) -> str:
    """`path` as it may appear in a header or a log line: 64 safe characters at most."""
    return _UNSAFE.sub("_", path[:MAX_CHARS]) or "_"


class LenientBody(BaseModel):
    """A body that accepts fields it does not define, for `unknown_fields` to name, and leaves
    them out of every dump and every attribute.

    `NEUTRAL_FIELDS`: names a dialect defines and this server refuses unless they are set to
    the value that changes nothing (core/fields.py `refusing`); accepted at that value, they are
    not unknown."""

    model_config = ConfigDict(extra="allow")
    NEUTRAL_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def __getattr__(self, name: str) -> Any:
        # Pydantic would hand an extra out as an attribute, so `getattr(message, "is_error",
        # False)` on a body without that field would read what the client slipped in.
        if name in (self.__pydantic_extra__ or ()):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return super().__getattr__(name)

    @model_serializer(mode="wrap")
    def _known_only(self, handler) -> Any:
        data = handler(self)
        for key in self.__pydantic_extra__ or ():
            data.pop(key, None)
        return data


def unknown_fields(body: BaseModel) -> tuple[list[str], int]:
    """The sanitized paths of the fields `body` and the bodies nested in it did not know (the
    first `MAX_NAMES`, in the order sent), and how many there were in all."""
    names: list[str] = []
    count = 0

    def walk(value: Any, path: str) -> None:
        nonlocal count
        if isinstance(value, BaseModel):
            for key in _unknown(value) + unhandled(value):
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


def _unknown(body: BaseModel) -> list[str]:
    extra = body.__pydantic_extra__
    return [k for k in extra if k not in type(body).NEUTRAL_FIELDS] if extra else []


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
