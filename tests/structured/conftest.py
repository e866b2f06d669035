"""Fixtures for constrained decoding: the embedded model's tokenizer and one grammar compiler."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer(smollm2_path):
    from promptcache.model.source import open_model

    return open_model(smollm2_path).tokenizer


@pytest.fixture(scope="session")
def compiler(tokenizer):
    from promptcache.engine.structured.compiler import GrammarCompiler

    return GrammarCompiler(tokenizer)


@pytest.fixture(scope="session")
def serving_engine():
    """One engine on the embedded SmolLM2 in the serving default (bfloat16) for the modules that
    serve the real model, each from a server of its own started one after another (an engine's
    start-up is the cost). Shared: tests must not rely on its cache being empty."""
    from promptcache.server.app import engine_from_settings
    from promptcache.server.settings import ServerSettings

    return engine_from_settings(ServerSettings())
