"""Log lines that a client cannot forge or inflate, as text or as one JSON object per line.

Client strings (prompt_cache_key, user, paths, prompt text with --log-prompts) used to reach the
log raw: a newline in a prompt_cache_key wrote a second, forged line attributed to another
tenant, and a 5 MiB key made a 5 MiB line per request. So:

- `log_event(logger, event, **fields)` quotes and escapes every string field and truncates it
  to `FIELD_CHARS`, so one event is one line whose fields cannot be confused with each other;
- both formatters escape control characters in any message, including uvicorn's access lines
  (which carry the client's path) and lines from libraries;
- `--log-format json` writes one JSON object per line, the fields as members, for shippers.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

FIELD_CHARS = 200  # client strings are cut to this many characters in logs
PROMPT_CHARS = 2000  # prompt text, logged only with --log-prompts


def _escape_unprintable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def truncate(text: str, limit: int = FIELD_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


def quoted(value: str, limit: int = FIELD_CHARS) -> str:
    """A client string as one token of a text log line: truncated, double-quoted, escaped."""
    return _escape_unprintable(json.dumps(truncate(value, limit), ensure_ascii=False))


def _text_field(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float, bool)):
        return str(value)
    return quoted(str(value))


def _json_field(value: Any) -> Any:
    return value if value is None or isinstance(value, (int, float, bool)) else truncate(str(value))


class _Event:
    """A lazily formatted `event k=v ...` message (formatted only if the line is emitted)."""

    def __init__(self, event: str, fields: dict[str, Any]):
        self.event, self.fields = event, fields

    def __str__(self) -> str:
        return " ".join([self.event, *(f"{k}={_text_field(v)}" for k, v in self.fields.items())])


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s", _Event(event, fields), extra={"event": event, "fields": fields})


class TextFormatter(logging.Formatter):
    """The usual `time level logger: message`, with control characters in the message escaped
    (a traceback, which is ours, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _escape_unprintable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, then the event's fields or the message."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields is not None:
            out["event"] = record.event
            out.update((k, _json_field(v)) for k, v in fields.items() if k not in out)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)  # ASCII: no U+2028 that a splitlines() would break on


def configure_logging(level: str, fmt: str) -> None:
    """Root logging for `promptcache serve` (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
