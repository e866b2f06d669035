"""Replies end at every end-of-generation token and carry no special tokens unless asked:
a reply once read "Red<|im_start|>user\\nBronze" because only the declared EOS stopped it."""

from __future__ import annotations

import pytest

from promptcache.engine.api import Request, SamplingParams
from promptcache.engine.detokenizer import IncrementalDetokenizer
from promptcache.model.source import open_model
from tests.engine.helpers import tiny_engine


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return open_model(None).tokenizer


@pytest.mark.parametrize("text", ["<|im_end|>", "<|endoftext|>"])
def test_every_end_of_generation_token_of_the_vocabulary_stops(smollm2_tokenizer, tiny_llama_dir, text):
    for tokenizer in (smollm2_tokenizer, open_model(tiny_llama_dir).tokenizer):  # GGUF and HF directory
        assert tokenizer.token_to_id(text) in tokenizer.eos_token_ids
    assert smollm2_tokenizer.token_to_id("<|im_start|>") not in smollm2_tokenizer.eos_token_ids


@pytest.mark.parametrize("skip,expected", [(True, "Red user Bronze"), (False, "Red<|im_start|> user Bronze")])
def test_special_tokens_are_left_out_of_the_text_unless_asked(smollm2_tokenizer, skip, expected):
    tok = smollm2_tokenizer
    ids = tok.encode("Red", add_special_tokens=False) + [tok.token_to_id("<|im_start|>")] + \
        tok.encode(" user Bronze", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, skip_special_tokens=skip)
    assert "".join(detok.push(i) for i in ids) + detok.flush() == expected


def test_a_reply_ends_at_an_end_of_generation_token(tiny_llama_dir, monkeypatch):
    """Force the sampler to emit <|im_end|> as the third token: the reply stops there, without it."""
    engine = tiny_engine(tiny_llama_dir, cache=None)
    end = engine.tokenizer.token_to_id("<|im_end|>")
    script = iter([100, 200, end, 300])
    monkeypatch.setattr("promptcache.engine.engine.sample", lambda logits, params, gens: [next(script)])
    engine.add_request(Request("r", [5] * 20, SamplingParams(max_tokens=10)))
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    assert outputs[-1].finished and outputs[-1].finish_reason == "stop"
    assert [t for out in outputs for t in out.new_token_ids] == [100, 200]
