"""Prompt logprobs follow their blocks: through the tier value format (an optional side section,
version 2, version 1 values still read), through eviction, and through a disk tier and an
engine restart (the tiny random-weight Llama: what is checked is what a restored block
carries, bitwise)."""

from __future__ import annotations

import struct

import numpy
import torch
import pytest
from xxhash import xxh3_128_digest

from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.engine.logprobs import RECORD
from promptcache.tiers.codec import BlockMeta, Cipher, CorruptBlock, WithSide, decode, encode, side_of
from tests.tiers.tier_engines import with_tiers

META = BlockMeta("model", "float32", (2, 4), b"k" * 16, b"tokens")
KV = bytes(range(32))


def test_a_side_section_round_trips_plain_and_encrypted():
    side = bytes(range(100, 150))
    for cipher in (None, Cipher(b"\x01" * 32)):
        value = encode(META, WithSide(KV, side), cipher)
        assert side_of(decode(value, META, cipher), len(KV)) == (KV, side)
        assert side_of(decode(encode(META, KV, cipher), META, cipher), len(KV)) == (KV, b"")
    damaged = bytearray(encode(META, WithSide(KV, side)))
    damaged[-20] ^= 1  # inside the side section: the checksum covers it
    with pytest.raises(CorruptBlock):
        decode(bytes(damaged), META)


def test_version_1_values_are_still_read():
    v2 = encode(META, KV)
    header_len = len(v2) - len(KV) - 16
    v1 = bytearray(v2[:header_len - 4])  # version 1 had no side length
    v1[4:6] = struct.pack("<H", 1)
    body = bytes(v1) + KV
    assert bytes(decode(body + xxh3_128_digest(body), META)) == KV


def scored(engine, prompt, rid, enabled=True):
    engine.add_request(Request(rid, prompt, SamplingParams(max_tokens=1, prompt_logprobs=5),
                               CacheOptions(enabled=enabled)))
    outs = []
    while engine.has_unfinished():
        outs += [o for o in engine.step() if o.request_id == rid]
    first = next(o for o in outs if o.prompt_logprobs is not None)
    return first.num_cached_tokens, first.prompt_logprobs



@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    from tests.engine.helpers import tiny_engine

    return tiny_engine(tiny_llama_dir, dtype=torch.bfloat16)

def test_only_the_blocks_lacking_logprobs_are_recomputed(engine):
    """A scored prefix of 3 blocks, then 3 more blocks cached without logprobs: the next scored
    request reads the first 3 (and recomputes the rest, filling them in); the one after reads
    all 6. Every answer equals the cache-off one, in bfloat16 and with 64-token prefill chunks."""
    a = [(11 * i + 5) % 400 + 20 for i in range(49)]
    b = [(13 * i + 7) % 400 + 20 for i in range(48)]
    assert scored(engine, a, "a")[0] == 0
    engine.generate([a + b + [9] * 20], SamplingParams(max_tokens=1))  # KV only for blocks 3..5
    cached, got = scored(engine, a + b + [21] * 20, "abc")
    assert cached == 48 and got == scored(engine, a + b + [21] * 20, "abc-off", enabled=False)[1]
    cached, got = scored(engine, a + b + [22] * 20, "abd")
    assert cached == 96 and got == scored(engine, a + b + [22] * 20, "abd-off", enabled=False)[1]

def test_logprobs_survive_eviction_to_disk_and_a_restart(engine, tmp_path):
    with_tiers(engine, disk_dir=str(tmp_path))
    prompt = [(7 * i + 3) % 500 + 10 for i in range(90)]
    cold_cached, cold = scored(engine, prompt, "cold", enabled=False)
    assert cold_cached == 0
    scored(engine, prompt, "fill")
    engine.close_tiers()  # the write-behind queue drained: the blocks and their logprobs are on disk
    with_tiers(engine, disk_dir=str(tmp_path))  # memory emptied, as a restart leaves it
    cached, restored = scored(engine, prompt, "restored")
    assert cached > 0 and restored == cold
    side = engine.prefix.side
    held = [b for b in range(engine.prefix.pool.num_blocks) if side.has(b)]
    assert held and side.get(held[:1]).dtype == RECORD
    engine.flush_cache(include_pinned=True)  # evicted: the side data goes with the block
    assert not any(side.has(b) for b in held)
    engine.close_tiers()


def test_store_refuses_side_data_of_the_wrong_size():
    from promptcache.engine.logprobs_store import PromptLogprobStore

    store = PromptLogprobStore(2, 4)
    with pytest.raises(ValueError):
        store.put_bytes(0, b"\x00" * 10)
    store.put_bytes(1, numpy.zeros(4, dtype=RECORD).tobytes())
    assert store.has(1) and not store.has(0) and len(store.to_bytes(1)) == 4 * RECORD.itemsize

