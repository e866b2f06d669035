"""Block keys: chained, namespaced, stable across processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.cache.keys import BlockKey, Namespace, block_keys, chain_key, pack_tokens

NS = Namespace(model="m@bf16")


def test_only_full_blocks_get_keys():
    assert len(block_keys(list(range(31)), 16, NS)) == 1
    assert len(block_keys(list(range(32)), 16, NS)) == 2
    assert block_keys([], 16, NS) == []


def test_keys_chain_from_the_namespace_root():
    tokens = list(range(48))
    keys = block_keys(tokens, 16, NS)
    packed = pack_tokens(tokens)
    assert keys[0] == chain_key(NS.root_key(), packed[:64])
    assert keys[2] == chain_key(keys[1], packed[128:192])
    assert all(isinstance(k, bytes) and len(k) == 16 for k in keys)


def test_a_block_key_depends_on_everything_before_it():
    a = block_keys([1] * 16 + [2] * 16, 16, NS)
    b = block_keys([3] * 16 + [2] * 16, 16, NS)
    assert a[1] != b[1]  # same tokens in block 1, different parents


@pytest.mark.parametrize("other", [
    Namespace(model="m@fp16"),
    Namespace(model="m@bf16", tenant="acme"),
    Namespace(model="m@bf16", salt=""),
    Namespace(model="m@bf16", salt="x"),
])
def test_namespaces_never_share_keys(other):
    tokens = list(range(32))
    assert other.root_key() != NS.root_key()
    assert set(block_keys(tokens, 16, other)).isdisjoint(block_keys(tokens, 16, NS))


def test_namespace_fields_cannot_run_into_each_other():
    assert Namespace("ab", "c").root_key() != Namespace("a", "bc").root_key()
    assert Namespace("a", "b", "c").root_key() != Namespace("a", "bc").root_key()


def test_keys_are_stable_across_processes():
    script = ("from promptcache.cache.keys import Namespace, block_keys;"
              "print(block_keys(list(range(64)), 16, Namespace('m', 't', 's'))[-1].hex())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == block_keys(list(range(64)), 16, Namespace("m", "t", "s"))[-1].hex()


def test_bad_input():
    with pytest.raises(ValueError):
        block_keys([1, 2], 0, NS)
    with pytest.raises(OverflowError):
        pack_tokens([-1])
    with pytest.raises(OverflowError):
        pack_tokens([2**32])


def test_block_key_is_a_distinct_bytes_type():
    assert BlockKey(b"x") == b"x"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=80), st.lists(st.integers(0, 2**32 - 1), max_size=80),
       st.integers(1, 8))
def test_equal_keys_iff_equal_prefixes(a, b, size):
    ka, kb = block_keys(a, size, NS), block_keys(b, size, NS)
    for i, (x, y) in enumerate(zip(ka, kb)):
        assert (x == y) == (a[: (i + 1) * size] == b[: (i + 1) * size])
