"""`serve --request-log PATH`: one JSON line per generation request, for `promptcache analyze`.

Each line: {"ts": unix seconds, "endpoint": path, "status": HTTP status, "request_id",
"tenant", "body_bytes"} and, only with --request-log-bodies, "body": the request's JSON body.
Bodies hold prompt text, so they are off by default; without them the log still counts
requests, tenants and sizes. The file is rotated by size (PATH.1, PATH.2, ... are the older
ones) and written by a background thread, so a slow disk never stalls the event loop.

Pure ASGI middleware inside the body size limit: an oversized body is refused before a byte
of it is kept here, and the body is read as the route reads it (no second read).
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import time
from pathlib import Path

from promptcache.server.guard import CALLER
from promptcache.server.request_id import request_id_of

LOGGED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses"})
_LISTENERS: list[logging.handlers.QueueListener] = []


def close_request_logs() -> None:
    """Write out every queued line and close the files (at exit; tests call it after stopping a
    server, to read a complete log)."""
    while _LISTENERS:
        listener = _LISTENERS.pop()
        listener.stop()
        for handler in listener.handlers:
            handler.close()


atexit.register(close_request_logs)


def open_request_log(path: str | Path, max_bytes: int, backups: int) -> logging.Logger:
    """A logger writing bare lines to `path`, rotated at `max_bytes`, through a queue."""
    target = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    target.setFormatter(logging.Formatter("%(message)s"))
    lines: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(lines, target)
    listener.start()
    _LISTENERS.append(listener)
    logger = logging.getLogger(f"promptcache.request_log.{Path(path).resolve()}")
    logger.handlers[:] = [logging.handlers.QueueHandler(lines)]
    logger.setLevel(logging.INFO)
    logger.propagate = False  # never into the server's own log (it may hold prompt text)
    return logger


class RequestLog:
    def __init__(self, app, *, path: str, bodies: bool, max_bytes: int, backups: int,
                 clock=time.time):
        self.app = app
        self.bodies = bodies
        self.clock = clock
        self.log = open_request_log(path, max_bytes, backups)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LOGGED_PATHS:
            return await self.app(scope, receive, send)
        started = self.clock()
        chunks: list[bytes] = []
        size = 0
        status = 500

        async def recording_receive():
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                size += len(body)
                if self.bodies:
                    chunks.append(body)
            return message

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, recording_receive, recording_send)
        finally:
            self._write(scope, started, status, size, chunks)

    def _write(self, scope, started: float, status: int, size: int, chunks: list[bytes]) -> None:
        caller = scope.get(CALLER)
        tenant = caller.tenant.name if caller is not None and caller.tenant is not None else "default"
        record = {"ts": round(started, 6), "endpoint": scope["path"], "status": status,
                  "request_id": request_id_of(scope), "tenant": tenant, "body_bytes": size}
        if self.bodies:
            try:
                record["body"] = json.loads(b"".join(chunks))
            except (UnicodeDecodeError, ValueError, RecursionError):
                record["body_invalid"] = True
        line = json.dumps(record, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") in the body: escaped, or the write fails
            line = json.dumps(record)  # and the handler prints the whole line, prompt and all, to stderr
        self.log.info(line)
