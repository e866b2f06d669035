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

import torch


class PoolExhaustedError(RuntimeError):
    pass


class BlockPool:
    def __init__(self, num_blocks: int, *, layers: int, kv_heads: int, block_size: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        self.block_size = block_size
        # torch.empty: on CPU, pages are only backed once a block is written.
        self.blocks = torch.empty((num_blocks, layers, 2, kv_heads, block_size, head_dim), dtype=dtype, device=device)
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out low ids first
        self.block_nbytes = self.blocks[0].numel() * self.blocks.element_size() if num_blocks else (
            layers * 2 * kv_heads * block_size * head_dim * torch.tensor([], dtype=dtype).element_size())

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
        """Copy blocks, in order, into positions [0, n * block_size) of `slot` in kv."""
        if not block_ids:
            return
        n = len(block_ids) * self.block_size
        ids = torch.tensor(block_ids, device=self.blocks.device)
        src = self.blocks.index_select(0, ids)  # (nb, L, 2, Hkv, bs, D)
        L, two, H, D = src.shape[1], src.shape[2], src.shape[3], src.shape[5]
        src = src.permute(1, 2, 3, 0, 4, 5).reshape(L, two, H, n, D)
        kv[:, :, slot, :, :n].copy_(src)

    def write(self, block_ids: list[int], kv: torch.Tensor, slot: int, first_block: int) -> None:
        """Copy positions of consecutive blocks first_block, first_block + 1, ... of `slot` into
        the pool blocks block_ids."""
        if not block_ids:
            return
        bs = self.block_size
        start, end = first_block * bs, (first_block + len(block_ids)) * bs
        src = kv[:, :, slot, :, start:end]  # (L, 2, Hkv, nb * bs, D)
        L, two, H, _, D = src.shape
        src = src.reshape(L, two, H, len(block_ids), bs, D).permute(3, 0, 1, 2, 4, 5)
        ids = torch.tensor(block_ids, device=self.blocks.device)
        self.blocks.index_copy_(0, ids, src.contiguous())
