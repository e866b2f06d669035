"""Block keys: the content address of every cached block.

Scheme (version 1, stable across processes and machines):

    root     = xxh3_128(b"promptcache/block-key/v1" || field(model) || field(tenant) || field(salt))
    key_0    = xxh3_128(root || tokens of block 0)
    key_i    = xxh3_128(key_{i-1} || tokens of block i)

`field(s)` is a 4-byte little-endian length followed by the UTF-8 bytes (salt None is the single
byte 0x00, a salt string is 0x01 then its field), so no two (model, tenant, salt) triples encode
to the same bytes. Tokens are packed once as little-endian uint32 (`pack_tokens`) and each block
is a slice of that buffer, so a key depends on the token ids and the block size only. Only FULL
blocks get a key: a partial last block is never cached.

Why xxh3_128 and not blake2b(digest_size=16): on an 8,192-token prompt (512 blocks of 16)
chaining with xxh3_128 takes ~31 us, blake2b ~190 us (benchmarks/prefix.py measures both), and
the lookup budget is 0.5 ms. xxh3 is not a cryptographic hash, which is acceptable here because
the in-memory trie never trusts a key alone: it walks from the namespace root one child at a time
and compares the stored token bytes of every block before reporting a hit (as nano-vllm does).
NOTE: a storage tier that looks blocks up by key alone (disk, redis) inherits only xxh3's
accidental-collision resistance (~2**-64 per pair); it must store and compare the tokens too if
it is shared between mutually untrusted tenants.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NewType

from xxhash import xxh3_128_digest

BlockKey = NewType("BlockKey", bytes)

TOKEN_NBYTES = 4
_KEY_DOMAIN = b"promptcache/block-key/v1"

if array("I").itemsize != TOKEN_NBYTES:  # pragma: no cover - every supported platform has 4
    raise ImportError("array('I') is not 32-bit on this platform")


def _field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "little") + raw


@dataclass(frozen=True)
class Namespace:
    """Who may share an entry: a model fingerprint, a tenant, an optional salt.

    `model` identifies the weights and dtype (anything that changes the KV of a token); two
    namespaces that differ in any field have different root keys, so they never share a block.
    """

    model: str
    tenant: str = "default"
    salt: str | None = None

    def root_key(self) -> BlockKey:
        salt = b"\x00" if self.salt is None else b"\x01" + _field(self.salt)
        return BlockKey(xxh3_128_digest(_KEY_DOMAIN + _field(self.model) + _field(self.tenant) + salt))


def pack_tokens(tokens: Sequence[int]) -> bytes:
    """Token ids as little-endian uint32 bytes; raises OverflowError for ids outside [0, 2**32)."""
    if isinstance(tokens, array) and tokens.typecode == "I" and sys.byteorder == "little":
        return tokens.tobytes()  # copying it element by element was most of analyze's hashing time
    packed = array("I", tokens)
    if sys.byteorder == "big":  # pragma: no cover
        packed.byteswap()
    return packed.tobytes()


def chain_key(parent: bytes, block: bytes) -> BlockKey:
    """The key of one block given its parent's key and the block's packed tokens."""
    return BlockKey(xxh3_128_digest(parent + block))


class PromptKeys:
    """One prompt's packed tokens and block keys in one namespace, each key hashed at most once.

    Keys are chained lazily, so a lookup that misses early hashes little, and kept, so that the
    scheduler's repeated peeks, the load and the save of one request hash each block once.
    `len()` is the number of tokens, so a PromptKeys stands wherever the cache takes tokens.
    """

    def __init__(self, tokens: Sequence[int], namespace: Namespace, block_size: int):
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.namespace = namespace
        self.block_size = block_size
        self.packed = pack_tokens(tokens)
        self.root = namespace.root_key()
        self.num_tokens = len(tokens)
        self.num_blocks = self.num_tokens // block_size
        self._keys: list[BlockKey] = []

    def __len__(self) -> int:
        return self.num_tokens

    def block(self, index: int) -> bytes:
        step = self.block_size * TOKEN_NBYTES
        return self.packed[index * step:(index + 1) * step]

    def key(self, index: int) -> BlockKey:
        """The key of full block `index` (hashing the blocks before it first, once)."""
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} of a prompt with {self.num_blocks} full blocks")
        keys = self._keys
        while len(keys) <= index:
            keys.append(chain_key(keys[-1] if keys else self.root, self.block(len(keys))))
        return keys[index]


def iter_block_keys(packed: bytes, block_size: int, parent_key: bytes, start: int = 0,
                    limit: int | None = None) -> Iterator[tuple[BlockKey, bytes]]:
    """Yield (key, block bytes) for full blocks start, start+1, ... (< limit) of `packed`.

    `parent_key` is the key of block start-1 (the namespace root key when start is 0). Lazy,
    so a caller can stop hashing at its first miss.
    """
    step = block_size * TOKEN_NBYTES
    end = len(packed) // step
    if limit is not None:
        end = min(end, limit)
    key = parent_key
    for offset in range(start * step, end * step, step):
        block = packed[offset : offset + step]
        key = xxh3_128_digest(key + block)
        yield BlockKey(key), block


def block_keys(tokens: Sequence[int], block_size: int, namespace: Namespace) -> list[BlockKey]:
    """Keys of the full blocks of `tokens` (a trailing partial block gets none)."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    return [key for key, _ in iter_block_keys(pack_tokens(tokens), block_size, namespace.root_key())]
