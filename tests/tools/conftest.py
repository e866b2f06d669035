"""Fixtures for the user tools (bench, analyze): a real server on the tiny random-weight Llama."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "server"))

from live_server import start_server  # noqa: E402

from promptcache.server.settings import ServerSettings  # noqa: E402


@pytest.fixture(scope="module")
def bench_server(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=8))
    yield server
    server.stop()
