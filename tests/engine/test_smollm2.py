"""The real model through the engine: the Paris answer in every serving mode, sampling controls,
stop strings, and what int8 weight-only decode changes.

A test that asserts a reply's text first checks the float32 reference's margins against the
configuration's measured error (margins.py). The question is "Fill in the blank: The capital of
France is ___.": the float32 reference leads by at least 2.12 at every token of its reply, where
"What is the capital of France?" led by 0.08 at its first token (docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import torch

from promptcache.engine.api import SamplingParams
from promptcache.engine.engine import Engine
from tests.engine.margins import check_margins

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Fill in the blank: The capital of France is ___."}]
ANSWER = "The capital of France is Paris."


def _chat(engine: Engine, messages) -> list[int]:
    tok = engine.tokenizer
    return tok.encode(tok.apply_chat_template(messages), add_special_tokens=False)


@pytest.fixture(scope="module")
def bf16_int8():
    return Engine.from_model(None, device="cpu", dtype="bfloat16", quantize="int8", max_batch_size=2)


def _answer_ids(engine: Engine) -> list[int]:
    """ANSWER's tokens, then the end of the turn."""
    tok = engine.tokenizer
    return tok.encode(ANSWER, add_special_tokens=False) + tok.encode("<|im_end|>", add_special_tokens=False)


def test_paris_float32(smollm2_engine):
    prompt = _chat(smollm2_engine, QUESTION)
    check_margins(smollm2_engine.model, smollm2_engine.tokenizer, prompt, _answer_ids(smollm2_engine), "float32")
    reply = smollm2_engine.generate([prompt], SamplingParams(max_tokens=24))[0]
    assert reply.text == ANSWER
    assert reply.finish_reason == "stop"


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_paris_bfloat16(quantize, bf16_int8, smollm2_engine):
    engine = bf16_int8 if quantize else Engine.from_model(None, device="cpu", dtype="bfloat16", max_batch_size=2)
    prompt = _chat(engine, QUESTION)
    check_margins(smollm2_engine.model, engine.tokenizer, prompt, _answer_ids(engine), "bfloat16", quantize)
    reply = engine.generate([prompt], SamplingParams(max_tokens=24))[0]
    assert reply.text == ANSWER
    assert reply.finish_reason == "stop"


def test_int8_decode_changes_logits_little(bf16_int8):
    """int8 copies serve decode only: prefill logits are untouched, decode logits move a little.
    The argmax after "The" is " capital" by a float32 margin of 5.17, far above either
    configuration's measured error."""
    plain = Engine.from_model(None, device="cpu", dtype="bfloat16", max_batch_size=1).model
    quant = bf16_int8.model
    prompt = torch.tensor(_chat(bf16_int8, QUESTION))
    kv_a, kv_b = plain.new_kv(1, 256), quant.new_kv(1, 256)
    assert torch.equal(plain.prefill(prompt, 0, 0, kv_a), quant.prefill(prompt, 0, 0, kv_b))
    step = torch.tensor(bf16_int8.tokenizer.encode("The", add_special_tokens=False))
    a = plain.decode(step, [len(prompt)], [0], kv_a)[0]
    b = quant.decode(step, [len(prompt)], [0], kv_b)[0]
    assert int(a.argmax()) == int(b.argmax())
    assert (a - b).abs().max().item() < 0.05 * a.abs().max().item()


def test_stop_string_and_max_tokens(smollm2_engine):
    prompt = _chat(smollm2_engine, QUESTION)
    full = smollm2_engine.generate([prompt], SamplingParams(max_tokens=24))[0].text
    stop = "Paris"
    cut = smollm2_engine.generate([prompt], SamplingParams(max_tokens=24, stop=(stop,)))[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"
    short = smollm2_engine.generate([prompt], SamplingParams(max_tokens=3))[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 3


def test_seeded_sampling_replays(smollm2_engine):
    prompt = _chat(smollm2_engine, [{"role": "user", "content": "Write a word."}])
    samples = {}
    for seed in (7, 8, 9):
        params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=seed)
        samples[seed] = smollm2_engine.generate([prompt], params)[0].token_ids
        assert smollm2_engine.generate([prompt], params)[0].token_ids == samples[seed]
    assert len({tuple(ids) for ids in samples.values()}) > 1  # the seed decides the sample: not ignored
