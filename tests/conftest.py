"""Shared fixtures: the embedded SmolLM2 file and a tiny random-weight Llama built here.

The tiny model is a real Llama checkpoint in Hugging Face format (config.json, safetensors,
tokenizer.json, tokenizer_config.json with a chat template), made by transformers with random
weights, so engine and server tests run the real loading path in well under a second. It reuses
SmolLM2's tokenizer, taken from the GGUF file on disk. Nothing is fetched from a model hub.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from real_parts import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402,F401  (hooks)

torch.set_num_threads(max(1, os.cpu_count() or 1))

TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from promptcache.model.source import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_path):
    """transformers' own tokenizer read from the GGUF (the reference implementation)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)


def make_tiny_llama(directory: Path, hf_tokenizer, seed: int = 0, weight_scale: float = 4.0, **overrides) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(hf_tokenizer),
        bos_token_id=hf_tokenizer.bos_token_id,
        eos_token_id=hf_tokenizer.eos_token_id,
        **{**TINY_CONFIG, **overrides},
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    # Random init gives tiny weights and flat logits; scaled up, greedy choices are decisive (tests
    # that compare logits bitwise also run unscaled, where near-ties are everywhere).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(weight_scale)
    model.save_pretrained(directory, safe_serialization=True)
    hf_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_hf_tokenizer) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_hf_tokenizer)


@pytest.fixture(scope="session")
def tiny_llama_unscaled_dir(tmp_path_factory, smollm2_hf_tokenizer) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-unscaled"), smollm2_hf_tokenizer, weight_scale=1.0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_hf_model(smollm2_path):
    """transformers' own Llama on SmolLM2's weights, loaded by transformers' GGUF reader."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name,
                                                 dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_engine():
    """The real model in float32 with the prefix cache on (shared: tests must not rely on its
    cache being empty; use a fresh tenant salt to get a cold cache)."""
    from promptcache.engine.engine import Engine

    return Engine.from_model(None, device="cpu", dtype="float32", max_batch_size=4)
