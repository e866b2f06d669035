"""The real model through the engine: the Paris answer in every serving mode, sampling controls,
stop strings, and what int8 weight-only decode changes."""

from __future__ import annotations

import pytest
import torch

from promptcache.engine.api import SamplingParams
from promptcache.engine.engine import Engine

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _chat(engine: Engine, messages) -> list[int]:
    tok = engine.tokenizer
    return tok.encode(tok.apply_chat_template(messages), add_special_tokens=False)


@pytest.fixture(scope="module")
def bf16_int8():
    return Engine.from_model(None, device="cpu", dtype="bfloat16", quantize="int8", max_batch_size=2)


def test_paris_float32(smollm2_engine):
    reply = smollm2_engine.generate([_chat(smollm2_engine, QUESTION)], SamplingParams(max_tokens=24))[0]
    assert "Paris" in reply.text
    assert reply.finish_reason == "stop"


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_paris_bfloat16(quantize, bf16_int8):
    engine = bf16_int8 if quantize else Engine.from_model(None, device="cpu", dtype="bfloat16", max_batch_size=2)
    reply = engine.generate([_chat(engine, QUESTION)], SamplingParams(max_tokens=24))[0]
    assert "Paris" in reply.text


def test_int8_decode_changes_logits_little(bf16_int8):
    """int8 copies serve decode only: prefill logits are untouched, decode logits move a little."""
    plain = Engine.from_model(None, device="cpu", dtype="bfloat16", max_batch_size=1).model
    quant = bf16_int8.model
    prompt = torch.tensor(_chat(bf16_int8, QUESTION))
    kv_a, kv_b = plain.new_kv(1, 256), quant.new_kv(1, 256)
    assert torch.equal(plain.prefill(prompt, 0, 0, kv_a), quant.prefill(prompt, 0, 0, kv_b))
    step = torch.tensor([504])
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
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    first = smollm2_engine.generate([prompt], params)[0].token_ids
    assert smollm2_engine.generate([prompt], params)[0].token_ids == first
