"""Short prompts reuse their full blocks on the real model, in the serving default (bfloat16 on
the CPU, with the default head and decode threads, as `promptcache serve` runs it), and a hit
still never changes the output: the same short prompt sent again reads every full block short
of its last token (cache/reusable.py), computes the 1-16 rows after it, and replies with the
very tokens it gives with the cache off. The float32 logits are compared bitwise too, for every
tail of 1 to 16 rows. Kept short: a handful of lengths, 4 tokens each.
"""

from __future__ import annotations

import random

import pytest

from promptcache.cache.config import CacheConfig
from promptcache.engine.api import CacheOptions, SamplingParams
from promptcache.engine.engine import Engine
from tests.engine.helpers import assert_tails_as_cold

pytestmark = pytest.mark.slow

BLOCK = 16
GREEDY = SamplingParams(max_tokens=4, ignore_eos=True)


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The serving default; a request with CacheOptions(enabled=False) runs with the cache off."""
    return Engine.from_model(None, cache_config=CacheConfig(max_bytes=64 * 2**20), max_batch_size=2)


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(200, 40000) for _ in range(n)]


def test_every_short_tail_is_computed_bitwise_as_the_cold_prefill(engine):
    rng = random.Random(0)  # tails of 1 to 16 rows after one block, and 1 after two
    assert_tails_as_cold(engine.model, [_tokens(rng, n) for n in range(17, 34)], BLOCK)


def test_a_short_prompt_sent_again_reads_its_full_blocks_and_replies_as_with_the_cache_off(engine):
    rng = random.Random(1)
    for n in (17, 26, 32, 33, 49):
        prompt = _tokens(rng, n)
        options = CacheOptions(salt=f"short-{n}")  # a cold cache for each length
        engine.generate([prompt], SamplingParams(max_tokens=1), options)  # leaves its full blocks
        warm = engine.generate([prompt], GREEDY, options)[0]
        off = engine.generate([prompt], GREEDY, CacheOptions(enabled=False))[0]
        assert warm.num_cached_tokens == (n - 1) // BLOCK * BLOCK
        assert warm.token_ids == off.token_ids, f"{n} tokens: a hit of {warm.num_cached_tokens} changed the output"
