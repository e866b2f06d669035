"""The HTTP layer's bounds (server/http_protocol.py), over raw sockets against live servers.

Each test asserts what the server does (the status it writes, that it closes the connection),
never how long it took: the deadlines are set short and the sockets wait far longer.
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from live_server import start_server

from promptcache.server.settings import ServerSettings

WAIT_S = 60  # a socket's safety net, far past any deadline below; nothing asserts time


@pytest.fixture(scope="module")
def patient_server(tiny_llama_dir):
    """Long deadlines, four connections at most."""
    server = start_server(ServerSettings(model=str(tiny_llama_dir), http_max_connections=4,
                                         http_header_timeout_s=600, http_body_timeout_s=600))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hasty_server(tiny_llama_dir):
    """Deadlines of a fraction of a second."""
    server = start_server(ServerSettings(model=str(tiny_llama_dir), http_header_timeout_s=0.2,
                                         http_body_timeout_s=0.2))
    yield server
    server.stop()


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server writes until it closes the connection (a timeout fails the test)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_error(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def health(server) -> bytes:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return read_until_closed(sock)


@pytest.mark.parametrize("finished", [True, False], ids=["whole-head", "head-still-coming"])
def test_a_head_over_the_cap_is_431_and_the_connection_closed(patient_server, finished):
    big = b"x" * (40 * 2**10)  # over the 32 KiB default
    with connect(patient_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + big + (b"\r\n\r\n" if finished else b""))
        status, error = status_and_error(read_until_closed(sock))
    assert status == 431 and error["code"] == "request_header_fields_too_large"
    assert health(patient_server).startswith(b"HTTP/1.1 200")


def test_a_head_under_the_cap_is_served(patient_server):
    with connect(patient_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Fine: "
                     + b"y" * (16 * 2**10) + b"\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200")


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, 30_000), max_size=6), body_kib=st.integers(0, 40))
def test_requests_under_the_cap_are_served_however_they_are_cut(patient_server, cuts, body_kib):
    """A keep-alive connection: a head just under the cap with a body of up to 40 KiB, then a
    second request in the same writes (pipelined), all cut into arbitrary writes."""
    body = json.dumps({"prompt": "x" * (body_kib * 2**10)}).encode()
    first = (b"POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Fill: " +
             b"f" * (30 * 2**10) + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    data = first + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with connect(patient_server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = 0
        for cut in sorted(set(cuts)) + [len(data)]:
            sock.sendall(data[start:cut])
            start = max(start, cut)
        answers = read_until_closed(sock)
    assert answers.startswith(b"HTTP/1.1 200") and answers.count(b"HTTP/1.1 200") == 2, answers[:200]


def test_a_slow_head_is_408_and_closed(hasty_server):
    with connect(hasty_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        status, error = status_and_error(read_until_closed(sock))
    assert status == 408 and error["code"] == "request_timeout"


def test_a_silent_connection_is_closed(hasty_server):
    with connect(hasty_server) as sock:
        assert read_until_closed(sock) == b""


def test_a_half_sent_body_is_408_and_closed(hasty_server):
    with connect(hasty_server) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\": ")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 408")


def test_past_the_connection_cap_the_longest_waiting_connection_is_closed(patient_server):
    slow = [connect(patient_server) for _ in range(4)]  # the cap: four, each mid-head
    for sock in slow:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    try:
        assert health(patient_server).startswith(b"HTTP/1.1 200")  # a fifth still gets in
        assert read_until_closed(slow[0]) == b""  # by closing the one waiting longest
        slow[1].sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")  # the others were kept
        assert read_until_closed(slow[1]).startswith(b"HTTP/1.1 200")
    finally:
        for sock in slow:
            sock.close()


def test_a_refused_body_is_not_read_and_the_connection_closed(patient_server):
    with connect(patient_server) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 900000000\r\n\r\n" + b"x" * 1024)
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 413")


def test_http_limits_reach_the_settings():
    from promptcache.server.settings import build_settings

    settings = build_settings({"http_max_connections": 7, "http_header_timeout_s": 2.5})
    assert settings.http_limits().max_connections == 7 and settings.http_limits().header_timeout_s == 2.5
    with pytest.raises(ValueError, match="http_max_header_bytes"):
        build_settings({"http_max_header_bytes": 10})
