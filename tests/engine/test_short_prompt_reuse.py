"""Short prompts reuse their full blocks, and the cache still never changes an output.

A prompt of block_size + 1 tokens or more reads every full block short of its last token from
the cache (cache/reusable.py): a 26-token prompt sent again reads 16 and computes 10. The tail
(1 to 16 rows) must then be bitwise what the cold prefill computes for those rows: attention
runs on the fixed grid, and a chunk of fewer than MIN_ROWS rows runs its products padded to
MIN_ROWS rows (model/llama.py), since a float32 product of a few rows sums in another order
than the larger cold chunk's, with or without --deterministic.

Tiny model, unscaled weights (near-ties everywhere, so any numeric difference shows in the
float32 logits), float32 and bfloat16, with and without --deterministic: unpadded, the tails of
1-3, 5-7 and 9-11 rows in float32 without --deterministic changed the logits. The real model's
test is test_short_prompt_reuse_smollm2.py.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcache.cache.config import CacheConfig
from promptcache.cache.reusable import reusable_blocks
from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.engine.engine import Engine
from promptcache.engine.loading import load_model
from promptcache.model.source import open_model
from tests.engine.helpers import assert_tails_as_cold

BLOCK = 16
# Every tail length from 1 to 16 rows after one block, and a few around later block lines.
LENGTHS = list(range(17, 41)) + [47, 48, 49, 63, 64, 65]
GREEDY = SamplingParams(max_tokens=4, ignore_eos=True)
OFF = CacheOptions(enabled=False)  # this request neither reads nor writes the cache
NUMERICS = {"float32": (torch.float32, True), "float32 --no-deterministic": (torch.float32, False),
            "bfloat16": (torch.bfloat16, True), "bfloat16 --no-deterministic": (torch.bfloat16, False)}
# The engine tests run in the serving dtype and in the class whose few-row products differ most
# (float32 without padding to probed row counts: 1-3, 5-7 and 9-11 rows measured off here).
ENGINES = ("bfloat16", "float32 --no-deterministic")


def _model(model_dir, numerics: str):
    dtype, deterministic = NUMERICS[numerics]
    return load_model(open_model(model_dir), dtype=dtype, device=torch.device("cpu"), deterministic=deterministic)


def _engine(model_dir, numerics: str) -> Engine:
    source = open_model(model_dir)
    return Engine(_model(model_dir, numerics), source.tokenizer, model_name=source.name,
                  fingerprint=source.fingerprint, cache_config=CacheConfig(max_bytes=16 * 2**20), max_batch_size=2)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, tiny_llama_unscaled_dir) -> Engine:
    """An engine with the cache on; a request with CacheOptions(enabled=False) runs with it off."""
    return _engine(tiny_llama_unscaled_dir, request.param)


def _tokens(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(3, vocab) for _ in range(n)]


@given(n=st.integers(0, 200), block=st.sampled_from([1, 4, 16, 32]), computed=st.integers(1, 40))
def test_the_rule_is_every_full_block_that_leaves_the_computed_tail(n, block, computed):
    blocks = reusable_blocks(n, block, computed)
    assert blocks * block <= max(0, n - computed) < (blocks + 1) * block
    if computed == 1 and n >= block + 1:
        assert blocks == (n - 1) // block >= 1  # a short prompt is never backed off to nothing


@pytest.mark.parametrize("numerics", list(NUMERICS))
def test_a_short_tail_is_computed_bitwise_as_the_cold_prefill(tiny_llama_unscaled_dir, numerics):
    """The model alone: prefix KV copied from a cold run, the tail (1-16 rows) in one chunk."""
    model, rng = _model(tiny_llama_unscaled_dir, numerics), random.Random(0)
    assert_tails_as_cold(model, [_tokens(rng, n, model.config.vocab_size) for n in LENGTHS], BLOCK)


def test_the_same_short_prompt_again_reads_its_full_blocks_and_replies_the_same(engine):
    rng = random.Random(1)
    for n in (17, 18, 24, 26, 31, 32, 33, 40, 48, 49):
        prompt = _tokens(rng, n, engine.model.config.vocab_size)
        options = CacheOptions(salt=f"again-{n}")  # a cold cache for each length
        off = engine.generate([prompt], GREEDY, OFF)[0]
        first, second = (engine.generate([prompt], GREEDY, options)[0] for _ in range(2))
        assert off.num_cached_tokens == first.num_cached_tokens == 0
        assert second.num_cached_tokens == (n - 1) // BLOCK * BLOCK
        assert first.token_ids == second.token_ids == off.token_ids, f"{n} tokens"


@pytest.fixture(scope="module")
def float32_engine(tiny_llama_unscaled_dir) -> Engine:
    return _engine(tiny_llama_unscaled_dir, "float32 --no-deterministic")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shared=st.integers(1, 48), earlier_tail=st.integers(0, 20), tail=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_a_prompt_sharing_a_short_prefix_reads_what_the_rule_says(float32_engine, shared, earlier_tail, tail, seed):
    """An earlier prompt of another length left the prefix's blocks; the later prompt reads every
    full block of the shared part short of its own last token, and replies as with no cache."""
    engine, rng = float32_engine, random.Random(seed)
    vocab = engine.model.config.vocab_size
    prefix = _tokens(rng, shared, vocab)
    earlier, prompt = prefix + _tokens(rng, earlier_tail, vocab), prefix + _tokens(rng, tail, vocab)
    options = CacheOptions(salt=f"shared-{shared}-{earlier_tail}-{tail}-{seed}")
    engine.generate([earlier], SamplingParams(max_tokens=1), options)
    warm = engine.generate([prompt], GREEDY, options)[0]
    common = next((i for i, (a, b) in enumerate(zip(earlier, prompt)) if a != b), min(len(earlier), len(prompt)))
    assert warm.num_cached_tokens == min(common // BLOCK, reusable_blocks(len(prompt), BLOCK)) * BLOCK
    assert warm.token_ids == engine.generate([prompt], GREEDY, OFF)[0].token_ids


def _outputs(engine: Engine, request: Request) -> tuple:
    """The request's first and last outputs."""
    engine.add_request(request)
    outputs = []
    while not outputs or not outputs[-1].finished:
        outputs += [out for out in engine.step() if out.request_id == request.request_id]
    return outputs[0], outputs[-1]


def test_prompt_logprobs_of_a_short_prompt_come_from_its_cached_block_unchanged(engine):
    prompt = _tokens(random.Random(2), 26, engine.model.config.vocab_size)
    sampling = SamplingParams(max_tokens=2, ignore_eos=True, prompt_logprobs=2)
    options = CacheOptions(salt="prompt-logprobs")
    off, _ = _outputs(engine, Request("off", prompt, sampling, OFF))
    _outputs(engine, Request("first", prompt, sampling, options))
    warm, last = _outputs(engine, Request("warm", prompt, sampling, options))
    assert last.num_cached_tokens == BLOCK
    assert warm.prompt_logprobs == off.prompt_logprobs
