"""The cache and batch invariants on the real model, in the serving default (bfloat16 on CPU),
in float32, and with --quantize int8.

Random cases: a shared prefix of 16 to 3,000 tokens and a suffix of 1 to 300 (both log-uniform,
so short and long ones both come up). The prefix's blocks were saved by an earlier request of
another length. Multi-turn cases reuse an earlier turn's prompt blocks: the second turn is the
first turn's prompt, its reply, and a new user turn. Token ids are compared exactly against
the cache-off engine running each case alone:
- with the cache on, one request at a time (the cache invariant);
- with 8 requests in flight, so suffix prefills run beside decodes and decode batches change
  size (batch invariance).
Sized to take about 2.5 minutes of a 2-core machine: 32 cases in bfloat16, 16 in float32, 4 with
int8.
"""

from __future__ import annotations

import math
import random

import pytest

from promptcache.cache.config import CacheConfig
from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.engine.engine import Engine

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=8, ignore_eos=True)
FIRST_TOKEN = SamplingParams(max_tokens=1, ignore_eos=True)
BLOCK = 16  # the cache's block size (CacheConfig's default)
CONFIGS = {  # name: (dtype, quantize, cases, seed)
    "bfloat16": ("bfloat16", None, 32, 1),
    "float32": ("float32", None, 16, 2),
    "bfloat16+int8": ("bfloat16", "int8", 4, 3),
    "bfloat16+int4+head": ("bfloat16", "int4+head", 4, 4),
}


def _common(a: list[int], b: list[int]) -> int:
    """The length of the longest common prefix."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(200, 40000) for _ in range(n)]


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def _cases(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        prefix = _tokens(rng, _log_uniform(rng, 16, 3000))
        suffix = _tokens(rng, _log_uniform(rng, 1, 300))
        if i % 4 == 3:  # multi-turn: the earlier turn's prompt and reply, then a new user turn
            first = prefix + _tokens(rng, _log_uniform(rng, 1, 300))
            cases.append(dict(earlier=first, multi_turn=True, suffix=suffix))
        else:  # a prefix saved by an earlier request of another length
            earlier = prefix + _tokens(rng, rng.randrange(0, 200))
            cases.append(dict(earlier=earlier, prompt=prefix + suffix))
    return cases


@pytest.fixture(scope="module", params=list(CONFIGS))
def config(request):
    dtype, quantize, count, seed = CONFIGS[request.param]
    build = dict(device="cpu", dtype=dtype, quantize=quantize, max_batch_size=8, max_seq_len=4096)
    cached = Engine.from_model(None, cache_config=CacheConfig(max_bytes=512 * 2**20), **build)
    uncached = Engine.from_model(None, cache_config=None, **build)
    return request.param, cached, uncached, _cases(seed, count)


def test_cache_on_equals_cache_off_and_batches_equal_alone(config):
    name, cached, uncached, cases = config
    prompts = []
    for i, case in enumerate(cases):
        options = CacheOptions(salt=f"{name}-{i}")  # a cold cache for each case
        if case.get("multi_turn"):
            reply = cached.generate([case["earlier"]], GREEDY, options)[0].token_ids
            prompt = case["earlier"] + reply + case["suffix"]
        else:
            cached.generate([case["earlier"]], FIRST_TOKEN, options)
            prompt = case["prompt"]
        warm = cached.generate([prompt], GREEDY, options)[0]
        cold = uncached.generate([prompt], GREEDY)[0]
        assert warm.token_ids == cold.token_ids, f"case {i}: a cache hit of {warm.num_cached_tokens} tokens changed the output"
        # Every case read at least the full blocks its earlier request saved and shares with it
        # (at most all but the prompt's last token is read: that one is computed).
        usable = min(_common(case["earlier"], prompt), len(prompt) - 1) // BLOCK * BLOCK
        assert usable <= warm.num_cached_tokens <= len(prompt) - 1, f"case {i}: {usable} tokens were cached"
        prompts.append((prompt, cold.token_ids))
    for start in range(0, len(prompts), 8):
        group = prompts[start:start + 8]
        salts = [f"{name}-{i}" for i in range(start, start + len(group))]
        together = _generate_together(cached, group, salts)
        for offset, ((_, alone), out) in enumerate(zip(group, together)):
            assert out == alone, f"case {start + offset}: the batch changed the output"


def _generate_together(engine: Engine, group: list, salts: list[str]) -> list[list[int]]:
    """The token ids of the group's prompts run in flight together, each in its own (warm)
    namespace (Engine.generate takes one namespace for all)."""
    ids = [f"together-{salt}" for salt in salts]
    for request_id, (prompt, _), salt in zip(ids, group, salts):
        engine.add_request(Request(request_id, prompt, GREEDY, CacheOptions(salt=salt)))
    tokens: dict[str, list[int]] = {i: [] for i in ids}
    done = set()
    while len(done) < len(ids):
        for out in engine.step():
            tokens[out.request_id].extend(out.new_token_ids)
            if out.finished:
                done.add(out.request_id)
    return [tokens[i] for i in ids]
