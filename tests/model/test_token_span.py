"""The bound on characters per token (model/token_span.py) holds for every text, is attained, and
is withheld where the tokenizer's pipeline could shrink or drop text; long texts tokenized (and
long id lists decoded) off the GIL give what the single-text calls give."""

from __future__ import annotations

import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import models, normalizers, pre_tokenizers

from promptcache.model.token_span import max_chars_per_token
from promptcache.model.tokenizer import GIL_FREE_CHARS

pytestmark = pytest.mark.slow

# Runs of spaces and line breaks make the longest tokens; letters, digits, CJK and emoji the
# multi-byte ones.
PIECES = st.sampled_from([" ", "  ", "\n", "\t", "a", "the", "#", "=", "1", "é", "中文", "😀", "<|im_end|>"])
TEXTS = st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=60).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, run=st.integers(0, 200))
def test_no_token_covers_more_characters_than_the_bound(smollm2_tokenizer, text, run):
    text = text + " " * run
    bound = smollm2_tokenizer.max_chars_per_token
    assert len(smollm2_tokenizer.encode(text, add_special_tokens=False)) * bound >= len(text)


def test_the_bound_is_smollm2s_longest_token_and_is_attained(smollm2_tokenizer):
    assert smollm2_tokenizer.max_chars_per_token == 81
    assert len(smollm2_tokenizer.encode("\n" + " " * 80, add_special_tokens=False)) == 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS.filter(bool))
def test_a_long_text_gets_the_same_ids_through_the_gil_free_call(smollm2_tokenizer, text):
    long = text * (GIL_FREE_CHARS // len(text) + 1)
    ids, backend = smollm2_tokenizer.encode(long), smollm2_tokenizer.backend
    assert ids == [*smollm2_tokenizer.encode("")[:1], *backend.encode(long, add_special_tokens=False).ids]
    assert smollm2_tokenizer.decode(ids * 4) == backend.decode(ids * 4, skip_special_tokens=False)  # back, off the GIL


def _bpe(normalizer=None, pre_tokenizer=None, **model) -> tokenizers.Tokenizer:
    backend = tokenizers.Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "[UNK]": 3}, merges=[("a", "b")],
                                              **model))
    if normalizer is not None:
        backend.normalizer = normalizer
    if pre_tokenizer is not None:
        backend.pre_tokenizer = pre_tokenizer
    return backend


def test_a_pipeline_that_can_shrink_text_gets_its_factor_or_no_bound():
    assert max_chars_per_token(_bpe()) == 5  # "[UNK]"
    assert max_chars_per_token(_bpe(normalizers.NFC())) == 20  # 4 characters can compose into one
    assert max_chars_per_token(_bpe(normalizers.Replace("abc", "a"))) == 15
    assert max_chars_per_token(_bpe(pre_tokenizer=pre_tokenizers.ByteLevel())) == 5
    unbounded = [
        _bpe(normalizers.BertNormalizer()),  # drops control characters
        _bpe(normalizers.Strip()),
        _bpe(normalizers.Replace(" ", "")),  # deletes
        _bpe(pre_tokenizer=pre_tokenizers.Whitespace()),  # drops spaces
        _bpe(pre_tokenizer=pre_tokenizers.Split(" ", behavior="removed")),
        _bpe(unk_token="[UNK]", fuse_unk=True),  # a run of unknown characters is one token
        tokenizers.Tokenizer(models.WordPiece(vocab={"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
    ]
    assert [max_chars_per_token(b) for b in unbounded] == [None] * len(unbounded)
