"""How a dialect names an HTTP status in its error body: a table, and a fallback for the rest.

Anthropic's `error.type` and Gemini's `error.status` are both such a name, and a client picks
its exception class by it; any status the table lacks is a client error below 500 and a server
error from 500 up, each in the dialect's own word, so a new status never lacks a name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class StatusNames:
    names: Mapping[int, str]
    client_error: str  # any other 4xx
    server_error: str  # any 5xx

    def __call__(self, status: int) -> str:
        return self.names.get(status, self.client_error if status < 500 else self.server_error)
