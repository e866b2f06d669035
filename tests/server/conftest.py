"""Live servers for the server tests: real uvicorn, real engine, tiny random-weight Llama.

Each fixture starts its own engine (an engine has one stepping thread, owned by its app) and
stops the server when the module is done. The tiny model loads in well under a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_server import start_server  # noqa: E402
from server_prompts import ADMIN_KEY, KEYS  # noqa: E402

from promptcache.server.settings import ServerSettings, build_settings  # noqa: E402

@pytest.fixture(scope="module")
def tiny_server(tiny_llama_dir):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=16))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed_server(tiny_llama_dir, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    settings = build_settings(
        dict(model=str(tiny_llama_dir), default_max_tokens=8, cache_mb=1.33, admin_key=ADMIN_KEY),
        keys_file=keys_file,
    )
    server = start_server(settings)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keyed_tiny_engine(tiny_llama_dir, tmp_path_factory):
    """One tiny engine whose cache knows the KEYS tenants and their quotas, for modules that
    serve it one after another (the prompt registry's); a module that needs an empty cache
    flushes it, pins included."""
    from promptcache.server.app import engine_from_settings

    keys_file = tmp_path_factory.mktemp("engine-keys") / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    return engine_from_settings(build_settings(dict(model=str(tiny_llama_dir)), keys_file=keys_file))


@pytest.fixture(scope="session")
def smollm2_engine():
    """One engine on the embedded SmolLM2 for the modules that need the real model, each serving
    it from a server of its own started one after another (an engine's start-up is the cost)."""
    from promptcache.server.app import engine_from_settings

    return engine_from_settings(ServerSettings())


@pytest.fixture(scope="module")
def smollm2_server(smollm2_engine):
    """A live server on the shared SmolLM2 engine, one per module."""
    server = start_server(ServerSettings(default_max_tokens=64), smollm2_engine)
    yield server
    server.stop()
