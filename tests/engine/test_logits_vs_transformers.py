"""Our decoder's logits equal transformers' reference Llama on the same weights (float32).

Checked for a prompt computed in one prefill, and for the same prompt computed as a prefill of a
prefix, KV reused (copied into another slot), then the suffix: the path a prefix-cache hit takes.
"""

from __future__ import annotations

import pytest
import torch

from promptcache.engine.loading import load_model
from promptcache.model.source import open_model

ATOL = 1e-4  # float32: observed differences are ~1e-5


def _ours(model, tokens: list[int], split: int | None):
    kv = model.new_kv(2, 512)
    ids = torch.tensor(tokens)
    if split is None:
        return model.prefill(ids, 0, 0, kv)
    model.prefill(ids[:split], 0, 0, kv, want_logits=False)
    kv[:, :, 1, :, :split] = kv[:, :, 0, :, :split]  # the KV of the prefix, reused in slot 1
    return model.prefill(ids[split:], split, 1, kv)


def _theirs(hf_model, tokens: list[int]):
    with torch.no_grad():
        return hf_model(torch.tensor([tokens])).logits[0, -1].float()


def _decode_chain(model, tokens: list[int], steps: int):
    """Prefill then greedy-decode `steps` tokens; returns the logits of every decode step."""
    kv = model.new_kv(1, 512)
    logits = model.prefill(torch.tensor(tokens), 0, 0, kv)
    out = []
    seq = list(tokens)
    for _ in range(steps):
        seq.append(int(logits.argmax()))
        logits = model.decode(torch.tensor([seq[-1]]), [len(seq) - 1], [0], kv)[0]
        out.append(logits)
    return seq, out


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    source = open_model(tiny_llama_dir)
    ours = load_model(source, dtype=torch.float32, device=torch.device("cpu"))
    theirs = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    return ours, theirs


@pytest.mark.parametrize("length,split", [(7, None), (100, None), (100, 64), (100, 37), (300, 299)])
def test_tiny_llama_logits_match(tiny, length, split):
    ours, theirs = tiny
    tokens = torch.randint(0, ours.config.vocab_size, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    diff = (_ours(ours, tokens, split) - _theirs(theirs, tokens)).abs().max().item()
    assert diff < ATOL


def test_tiny_llama_decode_matches(tiny):
    ours, theirs = tiny
    seq, step_logits = _decode_chain(ours, [1, 2, 3, 4, 5, 6, 7, 8], steps=5)
    for i, logits in enumerate(step_logits):
        assert (logits - _theirs(theirs, seq[: 9 + i])).abs().max().item() < ATOL


@pytest.mark.slow
def test_smollm2_logits_match(smollm2_path, smollm2_hf_model, smollm2_hf_tokenizer):
    ours = load_model(open_model(smollm2_path), dtype=torch.float32, device=torch.device("cpu"))
    text = "The quick brown fox jumps over the lazy dog. " * 6 + "Prompt caching saves time because"
    tokens = smollm2_hf_tokenizer(text)["input_ids"]
    reference = _theirs(smollm2_hf_model, tokens)
    whole = _ours(ours, tokens, None)
    reused = _ours(ours, tokens, 48)
    scale = reference.abs().max().item()
    assert (whole - reference).abs().max().item() < 1e-4 * max(1.0, scale)
    assert (reused - reference).abs().max().item() < 1e-4 * max(1.0, scale)
    assert int(whole.argmax()) == int(reference.argmax())


def test_batched_decode_attention_matches_per_sequence(tiny):
    """The GPU path (one masked call over the slots a batch spans) agrees with the CPU path."""
    ours, _ = tiny
    # The batched path reads keys past each sequence's end under a mask; a GPU cache starts
    # zeroed for it (new_kv), a CPU one does not, and 0 x NaN from fresh memory is NaN.
    kv = ours.new_kv(4, 128).zero_()
    gen = torch.Generator().manual_seed(3)
    lengths = {0: 20, 2: 35, 3: 7}
    for slot, n in lengths.items():
        ours.prefill(torch.randint(0, ours.config.vocab_size, (n,), generator=gen), 0, slot, kv, want_logits=False)
    tokens = torch.randint(0, ours.config.vocab_size, (3,), generator=gen)
    slots, positions = list(lengths), list(lengths.values())
    per_sequence = ours.decode(tokens, positions, slots, kv.clone())
    ours.batched_decode_attention = True
    try:
        batched = ours.decode(tokens, positions, slots, kv.clone())
    finally:
        ours.batched_decode_attention = False
    assert (per_sequence - batched).abs().max().item() < ATOL
