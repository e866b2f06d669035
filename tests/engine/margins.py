"""Margin checks for tests that assert the text of a real model's reply.

A greedy reply is kernel-dependent wherever the float32 reference's margin (top logit minus
runner-up) is smaller than what a serving configuration moves a logit gap by: the same test then
passes on one CPU and answers something else on another (issue 19: "The" led "L" by 0.08, and
bfloat16 flipped it on AMX and AVX2 kernels). So such a test first checks the margins, and a
prompt that a configuration cannot answer reliably fails as "margin too small for this
configuration", never as a wrong answer on some CI machine.
"""

from __future__ import annotations

import pytest
import torch

from promptcache.model.llama import LlamaModel

# How far each CPU configuration moved a logit gap (the reference's greedy token minus one of its
# top 32 tokens) against the float32 reference: "gap error" of benchmarks/quality.py, the larger
# of the default (AVX-512 BF16) and AVX2 oneDNN kernels, over 40 prompts x 32 greedy tokens
# (docs/benchmarks.md, "Agreement with the float32 reference"). float32 measured 0.00003 (the
# AVX2 head's summation order), rounded up. int8 moves gaps most: it applies to decode only.
MEASURED_ERROR = {
    ("float32", None): 0.001,
    ("bfloat16", None): 1.10,
    ("bfloat16", "int8"): 1.88,
}


@torch.inference_mode()
def reference_margins(reference: LlamaModel, prompt: list[int], reply: list[int]) -> list[tuple[int, float]]:
    """(reference greedy token, its margin over the runner-up) at each position of `reply`,
    feeding `reply` one token at a time after the prompt, as greedy decoding does."""
    kv = reference.new_kv(1, len(prompt) + len(reply))
    logits = reference.prefill(torch.tensor(prompt), 0, 0, kv)
    found = []
    for i, token in enumerate(reply):
        top = logits.topk(2)
        found.append((int(top.indices[0]), (top.values[0] - top.values[1]).item()))
        if i + 1 < len(reply):
            logits = reference.decode(torch.tensor([token]), [len(prompt) + i], [0], kv)[0]
    return found


def check_margins(reference: LlamaModel, tokenizer, prompt: list[int], reply: list[int], dtype: str,
                  quantize: str | None = None) -> None:
    """Fail unless `reply` is the float32 reference's greedy reply to `prompt` and its margin at
    every token is above the measured error of the (dtype, quantize) configuration."""
    assert reference.dtype == torch.float32, "the reference is the float32 model"
    error = MEASURED_ERROR[dtype, quantize]
    for i, (token, (top, margin)) in enumerate(zip(reply, reference_margins(reference, prompt, reply))):
        if top != token:
            pytest.fail(f"the float32 reference replies {tokenizer.decode([top])!r}, not "
                        f"{tokenizer.decode([token])!r}, at token {i} of {tokenizer.decode(reply)!r}")
        if margin <= error:
            pytest.fail(f"margin too small for this configuration ({dtype}, quantize={quantize}): "
                        f"{tokenizer.decode([token])!r} at token {i} of {tokenizer.decode(reply)!r} leads by "
                        f"{margin:.3f}, and this configuration moves logit gaps by up to {error:.3f}")
