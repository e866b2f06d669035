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
