"""The KV block pool: where the prefix cache's blocks live, each exactly once.

One tensor of shape (num_blocks, layers, 2, kv_heads, block_size, head_dim). A block id indexes
its first dimension, so a block is one contiguous run of bytes: a whole block moves in one copy
and serialises as one buffer (what the disk and Redis tiers will store).

Running sequences do not read the pool directly: a hit copies the matched blocks into the
sequence's slot of the engine's contiguous KV cache (`read`), and a completed block is copied out
of the slot into the pool (`write`). docs/design.md says why copy-in/copy-out was chosen over a
paged pool that attention reads from.

Ownership: the pool owns the free list; the prefix cache decides which ids are live and tells
the pool through `free` (its eviction callback).
"""

from __future__ import annotations

import numpy
import torch


class PoolExhaustedError(RuntimeError):
    pass


def kv_block_nbytes(*, layers: int, kv_heads: int, block_size: int, head_dim: int, dtype: torch.dtype) -> int:
    """Bytes of one KV block: the one source for the pool's size and the cache's budget."""
    return layers * 2 * kv_heads * block_size * head_dim * torch.tensor([], dtype=dtype).element_size()


class BlockPool:
    def __init__(self, num_blocks: int, *, layers: int, kv_heads: int, block_size: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        self.block_size = block_size
        # Zero-filled up front: the pool's memory is the cache budget, committed at start-up, so
        # no request pays for first-touch page faults (measured ~0.3 ms per cached block here).
        self.blocks = torch.zeros((num_blocks, layers, 2, kv_heads, block_size, head_dim), dtype=dtype, device=device)
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out low ids first
        self.block_nbytes = kv_block_nbytes(layers=layers, kv_heads=kv_heads, block_size=block_size,
                                            head_dim=head_dim, dtype=dtype)

    @property
    def block_shape(self) -> tuple[int, ...]:
        return tuple(self.blocks.shape[1:])

    @property
    def num_blocks(self) -> int:
        return self.blocks.shape[0]

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise PoolExhaustedError("no free KV block in the pool")
        return self._free.pop()

    def free(self, block_id: int) -> None:
        self._free.append(block_id)

    def read(self, block_ids: list[int], kv: torch.Tensor, slot: int) -> None:
        """Copy blocks, in order, into positions [0, n * block_size) of `slot` in kv.

        Blocks are allocated in id order, so a cached prefix usually sits in a few runs of
        consecutive ids; each run goes into the slot in one strided copy, with no gather."""
        first = 0
        for start, stop in _runs(block_ids):
            n = stop - start
            self._slot_blocks(kv, slot, first, n).copy_(self.blocks[start:stop].permute(1, 2, 3, 0, 4, 5))
            first += n

    def write(self, block_ids: list[int], kv: torch.Tensor, slot: int, first_block: int) -> None:
        """Copy consecutive blocks first_block, first_block + 1, ... of `slot` into the pool
        blocks block_ids."""
        for start, stop in _runs(block_ids):
            n = stop - start
            self.blocks[start:stop].permute(1, 2, 3, 0, 4, 5).copy_(self._slot_blocks(kv, slot, first_block, n))
            first_block += n

    def block_bytes(self, block_ids: list[int]) -> list[memoryview]:
        """The raw bytes of each block, copied out (one gather), so that the pool may reuse the
        ids at once while a background writer still holds the bytes."""
        if not block_ids:
            return []
        copy = self.blocks[torch.tensor(block_ids)].cpu().contiguous()
        raw = copy.view(len(block_ids), -1).view(torch.uint8).numpy()
        return [memoryview(row) for row in raw]

    def write_block_bytes(self, block_id: int, data: bytes | bytearray | memoryview) -> None:
        """Overwrite one block with `data`, its raw bytes as `block_bytes` returns them."""
        if len(data) != self.block_nbytes:
            raise ValueError(f"a block is {self.block_nbytes} bytes, not {len(data)}")
        src = numpy.frombuffer(data, dtype=numpy.uint8)
        dst = self.blocks[block_id].view(-1).view(torch.uint8)
        if dst.device.type == "cpu":
            dst.numpy()[:] = src  # one copy, from read-only bytes too
        else:
            dst.copy_(torch.from_numpy(src.copy()))

    def _slot_blocks(self, kv: torch.Tensor, slot: int, first_block: int, n: int) -> torch.Tensor:
        """A view of n blocks of a slot: (L, 2, Hkv, n, block_size, D)."""
        bs = self.block_size
        view = kv[:, :, slot, :, first_block * bs:(first_block + n) * bs]  # (L, 2, Hkv, n * bs, D)
        L, two, H, _, D = view.shape
        return view.view(L, two, H, n, bs, D)


def _runs(block_ids: list[int]) -> list[tuple[int, int]]:
    """[3, 4, 5, 9, 10] -> [(3, 6), (9, 11)]: runs of consecutive ids as half-open ranges."""
    runs: list[tuple[int, int]] = []
    for block_id in block_ids:
        if runs and runs[-1][1] == block_id:
            runs[-1] = (runs[-1][0], block_id + 1)
        else:
            runs.append((block_id, block_id + 1))
    return runs
