"""Small builders shared by the engine tests."""

from __future__ import annotations

import torch

from promptcache.cache.config import CacheConfig
from promptcache.engine.engine import Engine
from promptcache.engine.loading import load_model
from promptcache.model.source import open_model


def tiny_engine(model_dir, *, dtype=torch.float32, cache: CacheConfig | None = CacheConfig(max_bytes=64 * 2**20),
                prefill_chunk: int = 64, max_prefill_chunk: int = 2048, max_batch_size: int = 4) -> Engine:
    source = open_model(model_dir)
    model = load_model(source, dtype=dtype, device=torch.device("cpu"))
    return Engine(model, source.tokenizer, model_name=source.name, fingerprint=source.fingerprint,
                  cache_config=cache, max_batch_size=max_batch_size, prefill_chunk=prefill_chunk,
                  max_prefill_chunk=max_prefill_chunk)


def copy_slot(engine: Engine, src: int, dst: int, n: int) -> None:
    engine.kv[:, :, dst, :, :n] = engine.kv[:, :, src, :, :n]


def assert_tails_as_cold(model, prompts: list[list[int]], block_size: int = 16) -> None:
    """For each prompt: prefill it cold in one chunk, then copy the KV of its reusable blocks
    (cache/reusable.py) into another slot and prefill only the tail there, as a hit does. The
    last row's float32 logits and every position's KV must be the same bits."""
    from promptcache.cache.reusable import reusable_blocks

    kv = model.new_kv(2, max(map(len, prompts)))
    for prompt in prompts:
        n, tokens = len(prompt), torch.tensor(prompt)
        cold = model.prefill(tokens, 0, 0, kv)
        cached = reusable_blocks(n, block_size) * block_size
        kv[:, :, 1, :, :cached] = kv[:, :, 0, :, :cached]
        warm = model.prefill(tokens[cached:], cached, 1, kv)
        assert torch.equal(cold, warm), f"{n} tokens: a {n - cached}-row tail changed the logits"
        assert torch.equal(kv[:, :, 0, :, :n], kv[:, :, 1, :, :n]), f"{n} tokens: the tail's KV differs"
