"""The CPU decode step's speed levers move no bit (docs/design.md, "What determinism costs").

The model with prepacked weights and a step padded once is compared, bitwise, against the same
weights multiplied plainly with every product padding its own rows (the code before them):
prefill KV and decode logits, at batch sizes that pad (1, 3) and that do not, in bfloat16 and
with int8 decode. The tiny random-weight Llama has SmolLM2's kernel paths at small shapes.
"""

from __future__ import annotations

import pytest
import torch

import promptcache.model.llama as llama
from promptcache.model.source import open_model


def _plain(config, state, quantize):
    """The same model as the code before the levers: plain weights, per-product padding."""
    pack = llama.prepack
    llama.prepack = lambda weight: weight
    try:
        model = llama.LlamaModel(config, state, dtype=torch.bfloat16, quantize=quantize)
    finally:
        llama.prepack = pack
    model.prepacked = False
    model._decode_rows = lambda batch: batch
    return model


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_prepacked_padded_once_decode_is_bitwise_the_plain_one(tiny_llama_dir, quantize):
    source = open_model(tiny_llama_dir)
    state = source.load_state_dict()
    fast = llama.LlamaModel(source.config, state, dtype=torch.bfloat16, quantize=quantize)
    plain = _plain(source.config, state, quantize)
    assert fast.prepacked and not plain.prepacked
    gen = torch.Generator().manual_seed(0)
    lengths = [40, 57, 23, 90]
    kv_fast, kv_plain = fast.new_kv(4, 128), plain.new_kv(4, 128)
    for slot, n in enumerate(lengths):
        tokens = torch.randint(0, source.config.vocab_size, (n,), generator=gen)
        assert torch.equal(fast.prefill(tokens, 0, slot, kv_fast), plain.prefill(tokens, 0, slot, kv_plain))
    for batch in (1, 2, 3, 4):
        tokens = torch.randint(0, source.config.vocab_size, (batch,), generator=gen)
        positions = [lengths[b] for b in range(batch)]
        got = fast.decode(tokens, positions, list(range(batch)), kv_fast)
        want = plain.decode(tokens, positions, list(range(batch)), kv_plain)
        assert torch.equal(got, want), f"batch {batch}"
        lengths = [n + (b < batch) for b, n in enumerate(lengths)]
        for slot, n in enumerate(lengths):  # the KV written so far (the rest is never read)
            assert torch.equal(kv_fast[:, :, slot, :, :n], kv_plain[:, :, slot, :, :n])
