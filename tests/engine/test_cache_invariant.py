"""The key invariant: with the prefix cache on, greedy outputs are the same as with it off.

We claim more than equality within tolerance: a prefill row's result does not depend on how its
prompt was split into chunks (as long as no chunk has fewer than MIN_ROWS rows), so a warm
request computes its suffix with the very rows a cold one computes, and its logits and tokens
are bitwise identical. Compared exactly, so no near-tie can make these tests flaky.
"""

from __future__ import annotations

import random

import pytest
import torch

from promptcache.cache.config import CacheConfig
from promptcache.engine.api import CacheOptions, SamplingParams
from tests.engine.helpers import tiny_engine

GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


def _case(rng: random.Random, vocab: int):
    shared = [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 260))]
    a = shared + [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 60))]
    b = shared + [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 60))]
    return a, b


@pytest.fixture(scope="module")
def engines(tiny_llama_dir):
    """The cached engine prefills in 48-token chunks, the uncached one in 2,048-token chunks: the
    comparison also checks that a token's computation does not depend on how its prompt was split."""
    small = dict(prefill_chunk=48, max_prefill_chunk=48)
    return {
        torch.float32: (tiny_engine(tiny_llama_dir, **small), tiny_engine(tiny_llama_dir, cache=None)),
        torch.bfloat16: (tiny_engine(tiny_llama_dir, dtype=torch.bfloat16, **small),
                         tiny_engine(tiny_llama_dir, dtype=torch.bfloat16, cache=None)),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", range(12))
def test_greedy_output_is_identical_with_cache_on_and_off(engines, dtype, seed):
    cached, uncached = engines[dtype]
    rng = random.Random(seed)
    a, b = _case(rng, cached.model.config.vocab_size)
    options = CacheOptions(salt=f"case-{seed}-{dtype}")  # a cold cache for each case
    cached.generate([a], GREEDY, options)
    warm = cached.generate([b], GREEDY, options)[0]
    again = cached.generate([b], GREEDY, options)[0]  # b's own blocks (and its reply's) are cached now
    cold = uncached.generate([b], GREEDY)[0]
    shared_blocks = len(_common_prefix(a, b)) // 16
    assert warm.num_cached_tokens <= shared_blocks * 16
    if shared_blocks >= 2:
        assert warm.num_cached_tokens > 0
    assert again.num_cached_tokens >= (len(b) - 1) // 16 * 16 - 16
    assert warm.token_ids == cold.token_ids
    assert again.token_ids == cold.token_ids


def _common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("length,cached", [(200, 64), (200, 128), (200, 176), (130, 112), (64, 48), (129, 128)])
def test_cached_prefix_prefill_logits_are_bitwise_equal(tiny_llama_dir, dtype, length, cached):
    """Cold prefill in 64-token chunks vs. KV of `cached` tokens copied in and the rest computed."""
    engine = tiny_engine(tiny_llama_dir, dtype=dtype, cache=None)
    model, chunk = engine.model, engine.prefill_chunk
    tokens = torch.randint(3, model.config.vocab_size, (length,), generator=torch.Generator().manual_seed(length))
    kv = model.new_kv(2, 512)

    def run(slot: int, start: int):
        logits = None
        while start < length:
            end = min((start // chunk + 1) * chunk, length)
            logits = model.prefill(tokens[start:end], start, slot, kv, want_logits=end == length)
            start = end
        return logits

    cold = run(0, 0)
    kv[:, :, 1, :, :cached] = kv[:, :, 0, :, :cached]
    warm = run(1, cached)
    assert torch.equal(cold, warm)
    assert torch.equal(kv[:, :, 0, :, :length], kv[:, :, 1, :, :length])


@pytest.mark.slow
def test_smollm2_greedy_identical_with_cache(smollm2_engine):
    tok = smollm2_engine.tokenizer
    system = "You are a helpful assistant who answers in one short sentence. " * 12
    options = CacheOptions(salt="invariant-smollm2")
    params = SamplingParams(max_tokens=16)
    results, prompts = [], []
    for question in ("What is the capital of France?", "What is the largest planet?"):
        prompt = tok.encode(tok.apply_chat_template([{"role": "system", "content": system},
                                                     {"role": "user", "content": question}]),
                            add_special_tokens=False)
        prompts.append(prompt)
        off = smollm2_engine.generate([prompt], params, CacheOptions(enabled=False))[0]
        on = smollm2_engine.generate([prompt], params, options)[0]
        results.append(on.num_cached_tokens)
        assert on.token_ids == off.token_ids
    shared = len(_common_prefix(*prompts)) // 16 * 16
    assert shared >= 128
    assert shared - 16 <= results[1] <= shared  # the second question reuses the system prompt's blocks
