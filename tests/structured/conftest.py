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
