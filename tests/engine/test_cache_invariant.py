"""The key invariant: with the prefix cache on, outputs are the same as with it off, bitwise.

A prefill row's result does not depend on the chunk it is computed in (attention on a fixed grid,
model/attention.py; products measured row-invariant), so a warm request computes its suffix
with the very rows a cold one computes. These tests compare the float32 logits bitwise, not only
token ids, on a tiny model with decisive weights and with unscaled ones (near-ties everywhere,
so any numeric difference would show). The warm side reuses KV saved by an earlier prompt of
another length and computes its suffix in random chunks; the cold side is the real cold path,
one causal chunk of up to 2,048 rows. The real model's test is test_determinism_smollm2.py.
"""

from __future__ import annotations

import random

import pytest
import torch

from promptcache.engine.api import CacheOptions, SamplingParams
from tests.engine.helpers import tiny_engine

GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module", params=["scaled", "unscaled"])
def model_dir(request, tiny_llama_dir, tiny_llama_unscaled_dir):
    return tiny_llama_dir if request.param == "scaled" else tiny_llama_unscaled_dir


def _prefill_in_chunks(model, tokens, start, slot, kv, rng):
    logits = None
    while start < len(tokens):
        end = min(start + rng.choice([16, 17, 33, 64, 100, 256, 2048]), len(tokens))
        if len(tokens) - end < 16:
            end = len(tokens)
        logits = model.prefill(tokens[start:end], start, slot, kv, want_logits=end == len(tokens))
        start = end
    return logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", range(6))
def test_warm_logits_and_kv_equal_the_cold_path_bitwise(model_dir, dtype, seed):
    rng = random.Random(seed)
    engine = tiny_engine(model_dir, dtype=dtype, cache=None, max_batch_size=3)
    model = engine.model
    length = rng.randrange(40, 1500)
    cached = rng.randrange(1, (length - 16) // 16 + 1) * 16
    tokens = torch.randint(3, model.config.vocab_size, (length,), generator=torch.Generator().manual_seed(seed))
    kv = model.new_kv(3, 2048)
    cold = model.prefill(tokens, 0, 0, kv)  # one causal chunk from position 0
    # An earlier request of another length left the prefix's KV (computed in its own chunks).
    earlier = torch.cat([tokens[:cached], torch.randint(3, 1000, (rng.randrange(0, 300),))])
    _prefill_in_chunks(model, earlier, 0, 1, kv, rng)
    kv[:, :, 2, :, :cached] = kv[:, :, 1, :, :cached]
    warm = _prefill_in_chunks(model, tokens, cached, 2, kv, rng)
    assert torch.equal(cold, warm)
    assert torch.equal(kv[:, :, 0, :, :length], kv[:, :, 2, :, :length])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_tokens_identical_with_cache_on_and_off(model_dir, dtype):
    rng = random.Random(7)
    cached = tiny_engine(model_dir, dtype=dtype, prefill_chunk=48, max_prefill_chunk=48)
    uncached = tiny_engine(model_dir, dtype=dtype, cache=None)
    vocab = cached.model.config.vocab_size
    for case in range(8):
        shared = [rng.randrange(3, vocab) for _ in range(rng.randrange(16, 600))]
        a = shared + [rng.randrange(3, vocab) for _ in range(rng.randrange(0, 200))]
        b = shared + [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 100))]
        options = CacheOptions(salt=f"case-{case}-{dtype}")  # a cold cache for each case
        cached.generate([a], GREEDY, options)
        warm = cached.generate([b], GREEDY, options)[0]
        again = cached.generate([b], GREEDY, options)[0]
        cold = uncached.generate([b], GREEDY)[0]
        assert warm.num_cached_tokens >= (len(shared) // 16 - 1) * 16
        assert again.num_cached_tokens >= (len(b) - 1) // 16 * 16 - 16
        assert warm.token_ids == cold.token_ids
        assert again.token_ids == cold.token_ids
