"""The output head's float16 weights (model/head.py): float32 logits within the weights'
float16 rounding of the float32 head's, the same bits for a row at every row count, and a
cache namespace of their own."""

from __future__ import annotations

import pytest
import torch

from promptcache.model.head import HalfWeightHead, OutputHead, default_head, float16_head_available, output_head
from promptcache.model.numerics import numerics_class

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not float16_head_available(), reason="no FBGEMM fp16 kernel in this torch build")


def _weight(vocab: int = 4096, hidden: int = 96) -> torch.Tensor:
    return torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(0)) * 0.05


def test_float16_head_is_the_float32_head_up_to_float16_weights():
    weight = _weight()
    x = torch.randn(5, weight.shape[1], generator=torch.Generator().manual_seed(1))
    half = output_head(weight, CPU, torch.bfloat16)
    assert isinstance(half, HalfWeightHead)
    got = half(x)
    assert got.dtype == torch.float32
    # Exactly the float32 head over the float16-rounded weights, but for summation order.
    rounded = OutputHead(weight.half().float(), CPU, torch.bfloat16)(x)
    assert (got - rounded).abs().max().item() < 1e-5
    # The weights' rounding moves a logit by at most sum |x w| * 2**-11.
    bound = (x.abs() @ weight.abs().t()) * 2**-11
    assert ((got - OutputHead(weight, CPU, torch.bfloat16)(x)).abs() <= bound + 1e-5).all()


def test_a_row_has_the_same_bits_at_every_row_count():
    weight = _weight()
    head = HalfWeightHead(weight)
    x = torch.randn(48, weight.shape[1], generator=torch.Generator().manual_seed(2))
    full = head(x)
    for rows in range(1, 17):
        for start in range(0, 48 - rows + 1, rows):
            assert torch.equal(head(x[start:start + rows]), full[start:start + rows]), f"{rows} rows"


def test_which_head_and_its_namespace():
    assert default_head(CPU, torch.bfloat16) == "float16"
    assert default_head(CPU, torch.float32) == "float32"  # the reference configuration keeps float32
    assert isinstance(output_head(_weight(), CPU, torch.bfloat16, "float32"), OutputHead)
    too_large = _weight()
    too_large[3, 4] = 1e5  # beyond float16's range: the float32 head, not an infinite logit
    assert isinstance(output_head(too_large, CPU, torch.bfloat16), OutputHead)
    with pytest.raises(ValueError, match="unknown head"):
        output_head(_weight(), CPU, torch.bfloat16, "int3")
    assert numerics_class(torch.bfloat16, None, CPU) != numerics_class(torch.bfloat16, None, CPU, head="float32")
    assert numerics_class(torch.bfloat16, "int4+head", CPU) == numerics_class(torch.bfloat16, "int4+head", CPU, head="float32")
