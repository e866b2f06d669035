"""Prompt logprobs kept with the prefix cache's blocks: side data of each pool block.

Block b of a prompt holds tokens [b * bs, (b + 1) * bs); its side data is those tokens' records
(logprobs.py), the logprob of each given everything before it. That depends only on the tokens
the block's key already covers, so the side data is as shareable as the KV itself. It lives in
an array parallel to the block pool, indexed by the same block id, so it goes wherever the
block goes: it is freed with it on eviction, written with it to the lower tiers (an optional
section of the tier value format, tiers/codec.py) and promoted back with it.

Budget: every pool block reserves its side data (block_size x 168 bytes, 2.6 KiB for 16 tokens,
0.4% of SmolLM2's float32 KV block), and the cache counts a block as KV plus side data, so the
byte budget covers both. A block's side data is filled only when a request asks for prompt
logprobs; `has` says whether it is there.
"""

from __future__ import annotations

import numpy

from promptcache.engine.logprobs import RECORD, empty_records


def side_nbytes(block_size: int) -> int:
    """Bytes of one block's side data."""
    return block_size * RECORD.itemsize


class PromptLogprobStore:
    def __init__(self, num_blocks: int, block_size: int):
        self.block_size = block_size
        self._records = numpy.zeros((num_blocks, block_size), dtype=RECORD)
        self._present = numpy.zeros(num_blocks, dtype=bool)

    def has(self, block_id: int) -> bool:
        return bool(self._present[block_id])

    def clear(self, block_id: int) -> None:
        """The block was freed (evicted): its side data goes with it."""
        self._present[block_id] = False

    def put(self, block_id: int, records: numpy.ndarray) -> None:
        """Set a block's side data: `records`, block_size of them."""
        if records.shape != (self.block_size,):
            raise ValueError(f"a block's side data is {self.block_size} records, not {records.shape}")
        self._records[block_id] = records
        self._present[block_id] = True

    def get(self, block_ids: list[int]) -> numpy.ndarray:
        """The records of consecutive prompt blocks, in order (every block must have them)."""
        if not block_ids:
            return empty_records(0)
        return self._records[block_ids].reshape(-1)

    def to_bytes(self, block_id: int) -> bytes:
        """The block's side data as the tier value format's side section ('' when absent)."""
        return self._records[block_id].tobytes() if self._present[block_id] else b""

    def put_bytes(self, block_id: int, data: bytes | memoryview) -> None:
        """Set a block's side data from its stored bytes; empty bytes mean none."""
        if not len(data):
            self.clear(block_id)
            return
        if len(data) != side_nbytes(self.block_size):
            raise ValueError(f"a block's side data is {side_nbytes(self.block_size)} bytes, not {len(data)}")
        self.put(block_id, numpy.frombuffer(data, dtype=RECORD).copy())
