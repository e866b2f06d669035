"""Penalties, biases and min_p: each has its effect on the tiny model, each is the float32 formula
applied element by element, and with them on a request's tokens are the same alone or in a batch
and with the prefix cache on or off (bitwise: bfloat16 is batch-invariant on the CPU)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.engine.penalties import penalize
from tests.engine.helpers import tiny_engine

PROMPT = list(range(1000, 1040))
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return tiny_engine(tiny_llama_dir, dtype=torch.bfloat16, max_batch_size=4)


def tokens(engine, prompt: list[int] = PROMPT, max_tokens: int = MAX_TOKENS, **fields) -> list[int]:
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, **fields)
    return engine.generate([prompt], params)[0].token_ids


# -- effect ---------------------------------------------------------------------------------------

def test_a_strong_negative_bias_moves_greedy_off_its_token(engine):
    first = tokens(engine, max_tokens=1)[0]
    assert tokens(engine, max_tokens=1, logit_bias=((first, -100.0),))[0] != first


def test_a_strong_positive_bias_wins_every_step(engine):
    assert 7 not in tokens(engine)
    assert tokens(engine, logit_bias=((7, 100.0),)) == [7] * MAX_TOKENS


@pytest.mark.parametrize("field", ["frequency_penalty", "presence_penalty"])
def test_frequency_and_presence_penalties_reduce_repeats(engine, field):
    plain = max(Counter(tokens(engine, max_tokens=24)).values())
    assert plain > 1  # greedy repeats itself on this prompt
    assert max(Counter(tokens(engine, max_tokens=24, **{field: 2.0})).values()) < plain


def test_the_repetition_penalty_covers_the_prompt(engine):
    assert set(tokens(engine)) & set(PROMPT)  # greedy copies a prompt token ...
    assert not set(tokens(engine, repetition_penalty=2.0)) & set(PROMPT)  # ... and not when penalized


def test_a_negative_presence_penalty_favours_repeats(engine):
    assert len(set(tokens(engine, presence_penalty=-2.0))) < len(set(tokens(engine)))


def test_min_p_one_keeps_only_the_likeliest_token(engine):
    greedy = tokens(engine, max_tokens=8)
    assert tokens(engine, max_tokens=8, temperature=2.0, seed=5, min_p=1.0) == greedy
    assert tokens(engine, max_tokens=8, temperature=2.0, seed=5) != greedy  # without it the draw wanders


# -- the formula ----------------------------------------------------------------------------------

VOCAB = 12
logit = st.floats(-30, 30, width=32)
ids = st.lists(st.integers(0, VOCAB - 1), max_size=20)
params_strategy = st.builds(
    SamplingParams,
    presence_penalty=st.floats(-2, 2), frequency_penalty=st.floats(-2, 2),
    repetition_penalty=st.one_of(st.just(1.0), st.floats(0.01, 10)),
    logit_bias=st.dictionaries(st.integers(0, VOCAB - 1), st.floats(-100, 100), max_size=4).map(
        lambda d: tuple(sorted(d.items()))),
)


def reference(row: list[float], params: SamplingParams, prompt: list[int], output: list[int]) -> np.ndarray:
    """One logit at a time, in numpy's float32: bias, repetition, frequency, presence."""
    f32 = np.float32
    bias = dict(params.logit_bias)
    counts = Counter(output)
    out = []
    for token, value in enumerate(row):
        v = f32(value) + f32(bias.get(token, 0.0))
        if token in set(prompt) | set(output):
            v = v / f32(params.repetition_penalty) if v > 0 else v * f32(params.repetition_penalty)
        v = v - f32(params.frequency_penalty) * f32(counts[token]) - f32(params.presence_penalty) * f32(token in counts)
        out.append(v)
    return np.array(out, dtype=np.float32)


@settings(max_examples=60, deadline=None)
@given(row=st.lists(logit, min_size=VOCAB, max_size=VOCAB), params=params_strategy, prompt=ids, output=ids,
       order=st.permutations(range(VOCAB)))
def test_a_penalized_row_is_the_float32_formula_logit_by_logit(row, params, prompt, output, order):
    out = penalize(torch.tensor([row]), params, prompt, output)[0]
    np.testing.assert_allclose(out.numpy(), reference(row, params, prompt, output), rtol=2e-6, atol=1e-6)
    # Each logit depends on its own value and token only: renaming the tokens moves the bits along.
    where = {old: new for new, old in enumerate(order)}
    renamed = penalize(torch.tensor([[row[old] for old in order]]),
                       SamplingParams(presence_penalty=params.presence_penalty,
                                      frequency_penalty=params.frequency_penalty,
                                      repetition_penalty=params.repetition_penalty,
                                      logit_bias=tuple(sorted((where[t], b) for t, b in params.logit_bias))),
                       [where[t] for t in prompt], [where[t] for t in output])[0]
    assert torch.equal(renamed, out[list(order)])


def test_without_penalties_the_row_is_the_models_own():
    row = torch.randn(1, VOCAB)
    assert penalize(row, SamplingParams(min_p=0.5, temperature=1.0), [1, 2], [3]) is row


# -- the invariants -------------------------------------------------------------------------------

# Greedy and seeded sampling, each with penalties on; prompts long enough to span cache blocks.
CASES = [
    (list(range(300, 370)), SamplingParams(max_tokens=8, ignore_eos=True, frequency_penalty=1.5,
                                           presence_penalty=0.5, logit_bias=((261, -5.0), (7, 3.0)))),
    (list(range(2000, 2130)), SamplingParams(max_tokens=8, ignore_eos=True, repetition_penalty=1.3,
                                             temperature=0.9, seed=11, min_p=0.05, top_k=50)),
    (list(range(5000, 5040)), SamplingParams(max_tokens=8, ignore_eos=True, temperature=1.0, seed=-3,
                                             presence_penalty=-1.0, frequency_penalty=2.0, top_p=0.9)),
]


def run(engine, cases, tag: str) -> list[tuple[list[int], int]]:
    """Run the cases together; (tokens, cached prompt tokens) of each."""
    for i, (prompt, params) in enumerate(cases):
        engine.add_request(Request(f"{tag}-{i}", prompt, params, CacheOptions()))
    out = {f"{tag}-{i}": ([], 0) for i in range(len(cases))}
    while engine.has_unfinished():
        for delta in engine.step():
            got, _ = out[delta.request_id]
            out[delta.request_id] = (got + delta.new_token_ids, delta.num_cached_tokens)
    return [out[f"{tag}-{i}"] for i in range(len(cases))]


def test_penalties_keep_batch_invariance_and_cache_on_equal_to_off(tiny_llama_dir):
    cold = tiny_engine(tiny_llama_dir, dtype=torch.bfloat16, cache=None, max_batch_size=4)
    alone = [run(cold, [case], f"alone{i}")[0][0] for i, case in enumerate(CASES)]
    cached = tiny_engine(tiny_llama_dir, dtype=torch.bfloat16, max_batch_size=4)
    first = run(cached, CASES, "first")  # together, cold: batch invariance
    again = run(cached, CASES, "again")  # together, from the cache: cache on = off
    assert [t for t, _ in first] == alone
    assert [t for t, _ in again] == alone
    assert all(hit > 0 for _, hit in again)
    assert len({tuple(t) for t in alone}) == len(CASES)
