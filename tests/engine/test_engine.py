"""Engine behaviour on the tiny model: input errors, aborts, batching, slot reuse, detokenizer."""

from __future__ import annotations

import pytest
import torch

from promptcache.engine.api import EngineInputError, Request, SamplingParams
from promptcache.engine.detokenizer import IncrementalDetokenizer
from tests.engine.helpers import tiny_engine


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return tiny_engine(tiny_llama_dir, dtype=torch.bfloat16, max_batch_size=3)


@pytest.mark.parametrize("prompt,params,param", [
    ([], SamplingParams(), "prompt"),
    ([5] * 2040, SamplingParams(max_tokens=16), "max_tokens"),
    ([5] * 3000, SamplingParams(max_tokens=1), "prompt"),
    ([10**9], SamplingParams(), "prompt"),
    ([5], SamplingParams(max_tokens=0), "max_tokens"),
    ([5], SamplingParams(temperature=3.0), "temperature"),
    ([5], SamplingParams(top_p=0.0), "top_p"),
    ([5], SamplingParams(seed=2**64), "seed"),
    ([5], SamplingParams(seed=-(2**63) - 1), "seed"),
    ([5], SamplingParams(presence_penalty=2.5), "presence_penalty"),
    ([5], SamplingParams(frequency_penalty=float("nan")), "frequency_penalty"),
    ([5], SamplingParams(repetition_penalty=0.0), "repetition_penalty"),
    ([5], SamplingParams(min_p=1.5), "min_p"),
    ([5], SamplingParams(logit_bias=((49152, 1.0),)), "logit_bias"),
    ([5], SamplingParams(logit_bias=((-1, 1.0),)), "logit_bias"),
    ([5], SamplingParams(logit_bias=((3, 100.5),)), "logit_bias"),
    ([5], SamplingParams(logit_bias=((3, 1.0), (3, 2.0))), "logit_bias"),
    ([5], SamplingParams(logit_bias=tuple((t, 1.0) for t in range(301))), "logit_bias"),
])
def test_bad_requests_are_refused_with_the_param_named(engine, prompt, params, param):
    with pytest.raises(EngineInputError) as err:
        engine.add_request(Request("bad", prompt, params))
    assert err.value.param == param
    assert not engine.has_unfinished()


def test_batched_generation_equals_one_at_a_time_in_bf16(engine):
    """bf16 matmuls gave each row the same bits whatever the batch, and CPU decode attention is
    per sequence, so a batch of 5 (more than the 3 slots: some wait) matches running alone."""
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    prompts = [[7 + i] * (5 + 9 * i) for i in range(5)]
    together = engine.generate(prompts, params)
    alone = [engine.generate([p], params)[0] for p in prompts]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    while engine.has_unfinished():  # saves to the cache run one step after the last output
        engine.step()
    assert engine.num_running() == 0 and len(engine.scheduler.free_slots) == 3


def test_abort_frees_the_slot(engine):
    engine.add_request(Request("long", [9] * 40, SamplingParams(max_tokens=500, ignore_eos=True)))
    outputs = engine.step() + engine.step()
    assert outputs and not outputs[-1].finished
    engine.abort_request("long")
    final = engine.step()
    assert final[-1].finished and final[-1].finish_reason == "abort"
    engine.step()  # the aborted sequence's prompt blocks are saved, then its slot is freed
    assert not engine.has_unfinished() and len(engine.scheduler.free_slots) == 3


def test_detokenizer_never_emits_half_a_character(engine):
    tok = engine.tokenizer
    text = "Prompt caching 🚀 saves time: 東京 and Zürich ✓"
    ids = tok.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_detokenizer_holds_back_a_stop_string(engine):
    tok = engine.tokenizer
    detok = IncrementalDetokenizer(tok, stop=("END",))
    ids = tok.encode("alpha beta ENDING gamma", add_special_tokens=False)
    text = "".join(detok.push(i) for i in ids)
    assert text == "alpha beta " and detok.stopped
