"""Our GGUF-built tokenizer must give exactly transformers' ids: a different id anywhere in a
prompt changes every block key after it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcache.model.tokenizer import Tokenizer

pytestmark = pytest.mark.slow

TEXTS = [
    "",
    "Hello world",
    "Hello, world! How's it going? I'm fine, you'll see.",
    "  leading spaces",
    "trailing spaces   ",
    "tabs\tand\t\tmore tabs",
    "line one\nline two\n\n\nline five\r\nwindows",
    "    indented\n        more indented\n",
    "1234567890 3.14159 -42 1e10 0x1F",
    "Année, naïve, café, Straße, Ελληνικά, русский",
    "中文测试，日本語のテキスト、한국어 텍스트",
    "emoji 😀🎉👍🏽 and 🇫🇷 flags",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more<|endoftext|>end",
    "<|im_start|><|im_start|>",
    "not special: <|im_sta rt|> <im_start>",
    "\u00a0non-breaking\u2009thin\u200bzero-width",
    "a" * 200,
]


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_transformers(smollm2_tokenizer, smollm2_hf_tokenizer, text):
    assert smollm2_tokenizer.encode(text) == smollm2_hf_tokenizer(text)["input_ids"]
    assert smollm2_tokenizer.encode(text, add_special_tokens=False) == smollm2_hf_tokenizer.encode(
        text, add_special_tokens=False
    )


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trips(smollm2_tokenizer, smollm2_hf_tokenizer, text):
    ids = smollm2_tokenizer.encode(text)
    assert smollm2_tokenizer.decode(ids) == text
    assert smollm2_tokenizer.decode(ids) == smollm2_hf_tokenizer.decode(ids)
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=True) == smollm2_hf_tokenizer.decode(
        ids, skip_special_tokens=True
    )


# Known divergence: after a space, a numeral outside ASCII (categories Nd, No, Nl: "¹", "½",
# "٣", "Ⅻ") is split from the space by our SmolLM pre-tokenizer while transformers' GGUF-built
# one keeps " ¹" together: [216, 43183] here, [3351, 134] there. Ours is the model's own rule:
# SmolLM2's tokenizer.json splits every digit with tokenizers' Digits (every Unicode numeric)
# before GPT-2's byte-level split, and llama.cpp's "smollm" pre-tokenizer does the same with
# \p{N}; transformers' GGUF converter builds a plain GPT-2 ByteLevel pre-tokenizer and drops that
# step (ASCII digits agree anyway, since the vocabulary has no merges across digits). So the ids
# are checked against the reference on the text split at each numeral, which is that rule; the
# property test leaves such numerals out.
NON_ASCII_NUMERALS = {
    " ¹": [216, 43183],
    "a ½": [81, 216, 16738],
    " ٣": [216, 164, 113],
    " Ⅻ": [216, 173, 223, 121],
    "x ³y": [104, 216, 39050, 105],
}


def _split_at_numerals(text: str) -> list[str]:
    pieces = [""]
    for ch in text:
        if ch.isnumeric():
            pieces += [ch, ""]
        else:
            pieces[-1] += ch
    return [p for p in pieces if p]


@pytest.mark.parametrize("text, ids", NON_ASCII_NUMERALS.items())
def test_non_ascii_numerals_are_split_as_smollm_splits_them(smollm2_tokenizer, smollm2_hf_tokenizer, text, ids):
    assert smollm2_tokenizer.encode(text) == ids
    assert ids == [i for piece in _split_at_numerals(text)
                   for i in smollm2_hf_tokenizer.encode(piece, add_special_tokens=False)]
    assert smollm2_tokenizer.decode(ids) == text
    # The reference still keeps the numeral with its space; when it stops, these join TEXTS.
    assert smollm2_hf_tokenizer(text)["input_ids"] != ids


def _ascii_numerals_only(text: str) -> bool:
    return not any(ch.isnumeric() and not ch.isascii() for ch in text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60).filter(_ascii_numerals_only))
def test_arbitrary_text_matches_transformers(smollm2_tokenizer, smollm2_hf_tokenizer, text):
    assert smollm2_tokenizer.encode(text) == smollm2_hf_tokenizer(text)["input_ids"]


def test_special_tokens_are_single_ids(smollm2_tokenizer):
    assert smollm2_tokenizer.encode("<|im_start|><|im_end|><|endoftext|>") == [1, 2, 0]


def test_smollm2_metadata(smollm2_tokenizer, smollm2_hf_tokenizer):
    assert smollm2_tokenizer.vocab_size == len(smollm2_hf_tokenizer) == 49152
    assert smollm2_tokenizer.bos_token_id == smollm2_hf_tokenizer.bos_token_id == 1
    # The declared EOS (<|im_end|>) first, then every other end-of-generation token (<|endoftext|>).
    assert smollm2_tokenizer.eos_token_ids == (smollm2_hf_tokenizer.eos_token_id, 0) == (2, 0)
    assert smollm2_tokenizer.decode([0]) == "<|endoftext|>"
    # SmolLM2's GGUF says add_bos_token = false: prompts start with the template's <|im_start|>.
    assert smollm2_tokenizer.add_bos is False
    assert smollm2_tokenizer.encode("hi")[0] != 1


def test_bos_is_prepended_only_when_asked(smollm2_tokenizer):
    with_bos = Tokenizer(
        smollm2_tokenizer.backend, bos_token_id=1, eos_token_ids=(2,), add_bos=True, chat_template=None
    )
    bare = smollm2_tokenizer.encode("hello", add_special_tokens=False)
    assert with_bos.encode("hello") == [1, *bare]
    assert with_bos.encode("hello", add_special_tokens=False) == bare
