"""Continuous batching under load: 16 concurrent streaming clients x 3 requests all finish,
and the process stays within the cache budget plus the model."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import psutil
from server_prompts import SYSTEM_PROMPT, chat
from live_server import start_server

from promptcache.server.settings import ServerSettings

CACHE_MB = 16
CLIENTS, ROUNDS = 16, 3
# Headroom for what is neither cache nor weights: the batch's KV slots, activations, allocator
# slack, uvicorn and the client threads of this test.
SLACK_BYTES = 300 * 2**20


def model_bytes(model_dir, engine) -> int:
    """Weights as stored, plus the engine's per-slot KV (part of 'the model' at run time)."""
    weights = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    return weights + engine.kv.numel() * engine.kv.element_size()


def test_sixteen_streaming_clients(tiny_llama_dir):
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    server = start_server(
        ServerSettings(model=str(tiny_llama_dir), cache_mb=CACHE_MB, max_batch_size=8, max_queue=64)
    )
    try:
        client = server.client(timeout=120)

        def one_client(i: int) -> list[int]:
            cached = []
            for turn in range(ROUNDS):
                stream = client.chat.completions.create(
                    model=server.model,
                    messages=chat(SYSTEM_PROMPT, f"client {i} turn {turn} " + "detail " * (i * 5)),
                    max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True},
                )
                chunks = list(stream)
                assert chunks[-1].usage.completion_tokens >= 1
                assert any(c.choices and c.choices[0].finish_reason for c in chunks)
                cached.append(chunks[-1].usage.prompt_tokens_details.cached_tokens)
            return cached

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(one_client, range(CLIENTS)))
        assert len(results) == CLIENTS
        assert sum(sum(r) for r in results) > 0  # the shared system prompt was reused
        growth = process.memory_info().rss - rss_before
        budget = CACHE_MB * 2**20 + model_bytes(tiny_llama_dir, server.engine) + SLACK_BYTES
        print(f"rss growth {growth / 2**20:.0f} MiB of {budget / 2**20:.0f} MiB")
        assert growth < budget, growth / 2**20
        assert not server.engine.has_unfinished()
    finally:
        server.stop()
