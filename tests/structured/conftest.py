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


@pytest.fixture(scope="session")
def accepts(compiler, tokenizer):
    """accepts(spec, text): whether decoding under `spec` lets the model write `text`, token by
    token through the compiled grammar's matcher, ending where the grammar may end."""

    def accepts(spec, text: str) -> bool:
        matcher = compiler.compile(spec).new_matcher()
        return all(matcher.consume_token(t) for t in tokenizer.encode(text, add_special_tokens=False)) \
            and matcher.is_accepting()

    return accepts
