"""Fixtures for model-loading tests: our opened SmolLM2, shared across the session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_source(smollm2_path):
    from promptcache.model.source import open_model

    return open_model(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_source):
    return smollm2_source.tokenizer
