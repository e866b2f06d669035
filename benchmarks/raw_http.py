"""Attacks on the HTTP layer itself, over raw sockets (an HTTP client would refuse to send them):
a huge header, slow heads (slowloris) and half-sent bodies. Loopback only, each bounded in
count and time; every socket is closed when the attack returns."""

from __future__ import annotations

import socket
import time

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _status(sock: socket.socket) -> str:
    """The status the server answered with, or how it ended the connection."""
    try:
        sock.settimeout(5)
        data = sock.recv(4096)
    except (ConnectionError, TimeoutError, OSError) as exc:
        return type(exc).__name__
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def huge_header(port: int, size: int) -> str:
    """One header of `size` bytes, no key; returns the answer and the bytes the server took."""
    sent, chunk = 0, b"a" * 2**16
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except (ConnectionError, OSError):
            pass  # the server closed the connection: the answer, if any, is waiting
        return f"{_status(sock)} after {sent // 2**10} KiB sent"


def _open(port: int, count: int, first: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = _connect(port)
        sock.sendall(first)
        socks.append(sock)
    return socks


def _alive(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (no answer, no close)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # an answer (401, 408) or the close
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def slowloris(port: int, count: int, seconds: float) -> str:
    """`count` connections, each sending a header line a second and never ending its head."""
    socks = _open(port, count, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(1)  # the attack's pace, not a measurement
            for sock in socks:
                try:
                    sock.send(b"X-Slow: 1\r\n")
                except OSError:
                    pass
        held = sum(_alive(s) for s in socks)
        return f"{count - held} of {count} closed by the server within {seconds:g} s"
    finally:
        for sock in socks:
            sock.close()


def half_sent(port: int, count: int, seconds: float, key: str | None = None) -> str:
    """`count` requests whose head is whole and whose body stops after 10 of 1,000 bytes."""
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    socks = _open(port, count, HEAD + auth + b"Content-Length: 1000\r\n\r\n{\"model\": ")
    try:
        time.sleep(seconds)  # the attack holds its connections this long
        held = sum(_alive(s) for s in socks)
        return f"{count - held} of {count} closed by the server within {seconds:g} s"
    finally:
        for sock in socks:
            sock.close()
