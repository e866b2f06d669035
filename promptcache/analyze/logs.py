"""Reading a request log: JSON lines, each a request body or a record holding one.

A line is either a bare body (OpenAI chat or completions, Anthropic messages, Responses) or a
record `{"ts" | "timestamp" | "time": seconds or ISO 8601, "endpoint": "/v1/...", "tenant": ...,
"body": {...}}`, which is what `serve --request-log` writes. Bad lines (not JSON, not a body, too
long, a tenant that is not valid UTF-8) are counted with a reason, never fatal. Records without a body (a request log written
without --request-log-bodies) are counted apart: they say a request happened, not its prompt.

Requests without a timestamp are placed `interval_s` after the one before, so that TTLs and
the order of a log mean something either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from promptcache.analyze.dialects import BadBody, LoggedPrompt, parse_body
from promptcache.server.core.fields import lone_surrogate

MAX_LINE_BYTES = 16 * 2**20  # a longer line is a bad line; it is skipped unparsed
EXAMPLES_KEPT = 5
_TIME_FIELDS = ("ts", "timestamp", "time")


@dataclass(frozen=True)
class LoggedRequest:
    line: int  # 1-based line number in the log
    at: float  # seconds (the log's clock)
    tenant: str
    prompt: LoggedPrompt


@dataclass
class LogRead:
    requests: list[LoggedRequest] = field(default_factory=list)
    lines: int = 0
    bad_lines: int = 0
    without_body: int = 0
    refused: int = 0  # records of requests the server answered with an error (status >= 400)
    bad_examples: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), the first few

    def bad(self, line: int, reason: str) -> None:
        self.bad_lines += 1
        if len(self.bad_examples) < EXAMPLES_KEPT:
            self.bad_examples.append((line, reason))


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise BadBody("timestamp is not a number or an ISO 8601 string")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise BadBody("timestamp is not a number or an ISO 8601 string")


def _lines(stream: IO[bytes]) -> Iterator[bytes | None]:
    """Each line's bytes, or None for a line over MAX_LINE_BYTES (the rest of it is skipped)."""
    while chunk := stream.readline(MAX_LINE_BYTES + 1):
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield chunk


REFUSED = object()  # parse_line's prompt for a logged request that the server refused


def parse_line(raw: bytes) -> tuple[float | None, str, LoggedPrompt | None]:
    """(timestamp, tenant, prompt) of one line; prompt None for a record without a body,
    REFUSED for one whose status says it never reached the cache."""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadBody("not JSON") from None
    if not isinstance(record, dict):
        raise BadBody("not a JSON object")
    stamp = next((record[k] for k in _TIME_FIELDS if k in record), None)
    at = None if stamp is None else _seconds(stamp)
    tenant = record.get("tenant")
    tenant = tenant if isinstance(tenant, str) and tenant else "default"
    if lone_surrogate(tenant) is not None:  # it names a cache namespace, whose key encodes it as UTF-8
        raise BadBody("tenant is not valid UTF-8 (a lone surrogate)")
    if "body" in record or "endpoint" in record:
        endpoint = record.get("endpoint")
        body = record.get("body")
        status = record.get("status")
        if isinstance(status, int) and status >= 400:
            return at, tenant, REFUSED
        if body is None:
            return at, tenant, None
        return at, tenant, parse_body(body, endpoint if isinstance(endpoint, str) else None)
    body = {k: v for k, v in record.items() if k not in _TIME_FIELDS}
    return at, tenant, parse_body(body)


def read_log(path: Path, interval_s: float = 1.0) -> LogRead:
    """Every request of the log at `path`, in order; see the module docstring."""
    out = LogRead()
    clock = 0.0
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    with stream:
        for number, raw in enumerate(_lines(stream), 1):
            out.lines += 1
            if raw is None:
                out.bad(number, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            if not raw.strip():
                out.lines -= 1  # blank lines are not requests
                continue
            try:
                at, tenant, prompt = parse_line(raw)
            except BadBody as exc:
                out.bad(number, str(exc))
                continue
            except (TypeError, AttributeError, KeyError) as exc:  # a body shaped unlike any dialect
                out.bad(number, f"malformed body ({type(exc).__name__})")
                continue
            clock = at if at is not None else clock + interval_s
            if prompt is None:
                out.without_body += 1
                continue
            if prompt is REFUSED:
                out.refused += 1
                continue
            out.requests.append(LoggedRequest(number, clock, tenant, prompt))
    return out
