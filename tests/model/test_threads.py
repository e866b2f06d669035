"""The decode thread count: the rule by model size, and that a step leaves torch's count as it was."""

from __future__ import annotations

import pytest
import torch

from promptcache.model.threads import DECODE_BYTES_PER_THREAD, default_decode_threads, torch_threads
from promptcache.server.settings import ServerSettings


@pytest.mark.parametrize("weight_bytes, available, expected", [
    (270 * 2**20, 2, 1),  # SmolLM2-135M in bfloat16 with a float16 head: one thread
    (2_500 * 2**20, 16, 4),  # a 1B model in bfloat16
    (16 * 2**30, 16, 16),  # an 8B model: every thread
    (16 * 2**30, 2, 2),  # never more than torch has
    (0, 4, 1),  # never fewer than one
])
def test_one_decode_thread_per_512_mib_of_weights(weight_bytes, available, expected):
    assert DECODE_BYTES_PER_THREAD == 512 * 2**20
    assert default_decode_threads(weight_bytes, available) == expected


def test_torch_threads_restores_the_count_even_when_the_block_raises():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("a failing step")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_a_decode_thread_count_below_one_is_refused():
    with pytest.raises(ValueError, match="decode_threads"):
        ServerSettings(decode_threads=0)
