"""The disk store against a dict, under random operations (hypothesis): what it returns is
always the last value put for that key or nothing, and it never holds more than its cap."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.tiers.disk import DiskStore

KEYS = [bytes([i]) * 16 for i in range(6)]
ops = st.lists(st.tuples(st.sampled_from(["put", "get", "delete"]), st.sampled_from(KEYS),
                         st.binary(min_size=1, max_size=300)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=ops, cap=st.sampled_from([10**6, 700]))
def test_disk_store_matches_a_dict_and_keeps_its_cap(ops, cap):
    with tempfile.TemporaryDirectory() as directory:
        store, model = DiskStore(directory, cap), {}
        for op, key, value in ops:
            if op == "put":
                store.put(key, value)
                model[key] = value
            elif op == "delete":
                store.delete(key)
                model.pop(key, None)
            else:
                got = store.get(key)
                assert got in (None, model.get(key))
                if cap == 10**6:
                    assert got == model.get(key)  # nothing evicted under a large cap
            assert store.bytes_used <= cap
        reopened = DiskStore(directory, cap)  # a restart rescans the same files
        assert reopened.bytes_used == store.bytes_used
        for key in KEYS:
            assert reopened.get(key) in (None, model.get(key))
