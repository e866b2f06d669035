"""The value format of a block in a lower tier: a small binary header, the raw KV bytes, a check.

    magic "PCKV" | u16 format version | u8 flags (bit 0: encrypted)
    u8 len + dtype name | u8 ndim + u32 dims | u16 len + model id | u8 len + block key
    u32 len + packed tokens | u64 payload length | u32 side length (version 2 on)
    plain:     payload | side | xxh3_128(header || payload || side)
    encrypted: 12-byte nonce | AES-GCM(payload || side, associated data = header) (ciphertext || 16-byte tag)

The side section (version 2) carries a block's side data, its prompt logprobs
(engine/logprobs_store.py), when it has any; it is empty otherwise. Version 1 values (no side
length, no side section) are still read.

Never JSON or pickle: a value is read only by `decode`, which trusts nothing it has not
checked. The header names the block (key and tokens) and what its bytes mean (dtype, shape,
model id), and `decode` compares all of them with what the caller expects, so a block written
for another model, another prefix or by a hash collision is refused, not used. The checksum (or
the GCM tag, which also proves the writer held the key) covers header and payload, so a
truncated or flipped file fails. All integers are little-endian.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from xxhash import xxh3_128_digest

MAGIC = b"PCKV"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_FIXED = struct.Struct("<4sHB")
_NONCE = 12
_CHECK = 16
_ENCRYPTED = 1


class CorruptBlock(ValueError):
    """A stored value that must not be used: damaged, truncated, or not the block asked for."""


@dataclass(frozen=True)
class BlockMeta:
    """What a block's bytes are: the caller's expectation, and what the header records."""

    model_id: str
    dtype: str
    shape: tuple[int, ...]
    key: bytes
    tokens: bytes


@dataclass(frozen=True)
class WithSide:
    """A block's payload (its KV bytes) and its side data, to encode as one value."""

    payload: bytes | memoryview
    side: bytes | memoryview = b""


def split(value: bytes | memoryview | WithSide) -> tuple[bytes | memoryview, bytes | memoryview]:
    """(payload, side) of what a caller hands to `encode`."""
    return (value.payload, value.side) if isinstance(value, WithSide) else (value, b"")


class Cipher:
    """AES-GCM with a 32-byte key (`--tier-key`, 64 hex digits). KV bytes reveal the prompt, and
    a shared Redis is readable by anyone holding its password; the tag is the integrity check."""

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ValueError("the tier key must be 32 bytes (64 hex digits)")
        self._aead = AESGCM(key)

    @classmethod
    def from_hex(cls, text: str) -> Cipher:
        try:
            return cls(bytes.fromhex(text.strip()))
        except ValueError:
            raise ValueError("the tier key must be 64 hex digits (32 bytes)") from None

    def seal(self, payload: bytes | memoryview, header: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, bytes(payload), header)

    def open(self, sealed: memoryview, header: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(bytes(sealed[:_NONCE]), bytes(sealed[_NONCE:]), header)
        except InvalidTag:
            raise CorruptBlock("authentication failed (damaged, or written with another key)") from None


def _header(meta: BlockMeta, payload_len: int, side_len: int, flags: int) -> bytes:
    dtype, model = meta.dtype.encode(), meta.model_id.encode()
    return b"".join([
        _FIXED.pack(MAGIC, FORMAT_VERSION, flags),
        struct.pack("<B", len(dtype)), dtype,
        struct.pack(f"<B{len(meta.shape)}I", len(meta.shape), *meta.shape),
        struct.pack("<H", len(model)), model,
        struct.pack("<B", len(meta.key)), meta.key,
        struct.pack("<I", len(meta.tokens)), meta.tokens,
        struct.pack("<QI", payload_len, side_len),
    ])


def encode(meta: BlockMeta, value: bytes | memoryview | WithSide, cipher: Cipher | None = None) -> bytes:
    """One stored value: `value` is a block's payload, or a `WithSide` (payload and side data)."""
    payload, side = split(value)
    header = _header(meta, len(payload), len(side), _ENCRYPTED if cipher else 0)
    if cipher is not None:
        return header + cipher.seal(bytes(payload) + bytes(side), header)
    body = b"".join([header, payload, side])
    return body + xxh3_128_digest(body)


class _Reader:
    def __init__(self, data: memoryview):
        self.data, self.at = data, 0

    def take(self, n: int) -> memoryview:
        if self.at + n > len(self.data):
            raise CorruptBlock("truncated header")
        part = self.data[self.at:self.at + n]
        self.at += n
        return part

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def field(self, len_fmt: str) -> bytes:
        return bytes(self.take(self.unpack(len_fmt)[0]))


def decode(data: bytes | memoryview, expect: BlockMeta, cipher: Cipher | None = None) -> memoryview:
    """The payload of `data`, followed by its side section (empty in a version 1 value), after
    checking integrity and that it is the block `expect` names; `side_of` splits the two.

    Raises CorruptBlock otherwise (the caller counts it as a miss and removes the value)."""
    view = memoryview(data)
    reader = _Reader(view)
    magic, version, flags = reader.unpack(_FIXED.format)
    if magic != MAGIC:
        raise CorruptBlock("not a promptcache block")
    if version not in READABLE_VERSIONS:
        raise CorruptBlock(f"format version {version}, this build reads {READABLE_VERSIONS}")
    dtype = reader.field("<B").decode("ascii", "replace")
    (ndim,) = reader.unpack("<B")
    shape = reader.unpack(f"<{ndim}I")
    model = reader.field("<H").decode("utf-8", "replace")
    key, tokens = reader.field("<B"), reader.field("<I")
    (payload_len,) = reader.unpack("<Q")
    (side_len,) = reader.unpack("<I") if version >= 2 else (0,)
    header_len = reader.at
    payload_len += side_len  # from here on, the payload with its side section
    if bool(flags & _ENCRYPTED) != (cipher is not None):
        raise CorruptBlock("encrypted with a key" if cipher is None else "stored without encryption")
    if cipher is not None:
        payload = memoryview(cipher.open(view[header_len:], bytes(view[:header_len])))
    else:
        if len(view) != header_len + payload_len + _CHECK:
            raise CorruptBlock("wrong length (truncated or padded)")
        if xxh3_128_digest(view[:-_CHECK]) != view[-_CHECK:]:
            raise CorruptBlock("checksum mismatch")
        payload = view[header_len:header_len + payload_len]
    if len(payload) != payload_len:
        raise CorruptBlock("wrong payload length")
    if model != expect.model_id:
        raise CorruptBlock("the block belongs to another model")
    if key != expect.key or tokens != expect.tokens:
        raise CorruptBlock("the block belongs to another prefix")
    if dtype != expect.dtype or tuple(shape) != tuple(expect.shape):
        raise CorruptBlock("the block has another dtype or shape")
    return payload


def side_of(payload: memoryview, payload_nbytes: int) -> tuple[memoryview, memoryview]:
    """`decode`'s result split into the block's payload (`payload_nbytes` long) and its side data."""
    if len(payload) < payload_nbytes:
        raise CorruptBlock("the payload is shorter than a block")
    return payload[:payload_nbytes], payload[payload_nbytes:]
