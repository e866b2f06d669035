"""The HTTP layer's limits (enforced by `http_protocol.py`), apart from uvicorn so that the
settings can name their defaults without importing a server.

Defaults: a head of 32 KiB holds any real client's headers (Node's cap is 16 KiB, nginx's
default buffers 32 KiB); 10 s for a head and 60 s for a body of at most `max_body_bytes` are
far past any client on a working network; 1,024 connections is well under the usual file
descriptor limit, so the server keeps descriptors for its own files when they are all taken.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 32 * 2**10  # request line and headers of one request
    header_timeout_s: float = 10.0  # from connection open (or the previous response) to the end of the head
    body_timeout_s: float = 60.0  # from the end of the head to the end of the body
    max_connections: int = 1024  # open connections; past it the slowest reader is closed
    keep_alive_s: float = 5.0  # idle time between requests on a connection (uvicorn's timeout_keep_alive)

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1024 or self.max_connections < 1:
            raise ValueError("http_max_header_bytes must be at least 1024 and http_max_connections at least 1")
        if min(self.header_timeout_s, self.body_timeout_s, self.keep_alive_s) <= 0:
            raise ValueError("http_header_timeout_s, http_body_timeout_s and http_keep_alive_s must be positive")
