"""Is one masked attention call for a whole decode batch batch-invariant on the CPU, and faster?

    python benchmarks/batched_attention.py

Decode attention on the CPU runs one SDPA call per sequence over exactly its own keys
(model/llama.py), which is batch-invariant by construction but costs ~50 us of call overhead per
sequence and layer (benchmarks/decode_profile.py). One call for the batch must pad every
sequence's keys to the longest one's and mask the rest, so it is batch-invariant only if a row's
result does not depend on how far its keys were padded. At SmolLM2's attention shape (9 query
heads, 3 KV heads, head size 64, float32 as the CPU's KV cache), one thread, this prints:
- how many padded-and-masked calls equal the unpadded call, bitwise;
- how many masked calls at different padded lengths equal each other, bitwise;
- the time of 4 per-sequence calls against one masked call, at 257 keys each.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

HQ, HKV, D, SLOTS, LENGTH = 9, 3, 64, 4, 2048


def attend(q, keys, values, n: int, padded: int | None = None) -> torch.Tensor:
    """One query's attention over the first n keys, computed over `padded` keys with a mask."""
    if padded is None:
        return F.scaled_dot_product_attention(q, keys[:, :, :n], values[:, :, :n], enable_gqa=True)
    mask = (torch.arange(padded) < n)[None, None, None, :]
    return F.scaled_dot_product_attention(q, keys[:, :, :padded], values[:, :, :padded], attn_mask=mask, enable_gqa=True)


def main() -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    keys, values = torch.randn(SLOTS, HKV, LENGTH, D, generator=gen), torch.randn(SLOTS, HKV, LENGTH, D, generator=gen)
    exact = padded_same = lengths = lengths_same = 0
    for n in (1, 2, 15, 16, 17, 100, 255, 256, 257, 300, 511, 512, 513, 1000, 1500):
        q = torch.randn(1, HQ, 1, D, generator=gen)
        alone = attend(q, keys[:1], values[:1], n)
        outs = [attend(q, keys[:1], values[:1], n, p) for p in sorted({n, n + 1, n + 15, n + 100, 512, 1024, 2048}) if p >= n]
        exact += len(outs)
        padded_same += sum(torch.equal(o, alone) for o in outs)
        lengths += len(outs) - 1
        lengths_same += sum(torch.equal(o, outs[0]) for o in outs[1:])
    print(f"padded and masked equal to the unpadded call: {padded_same} of {exact}")
    print(f"masked calls at different padded lengths equal: {lengths_same} of {lengths}")
    q = torch.randn(SLOTS, HQ, 1, D, generator=gen)

    def per_sequence():
        for b in range(SLOTS):
            attend(q[b:b + 1], keys[b:b + 1], values[b:b + 1], 257)

    def batched():
        attend(q, keys, values, 257, 257)

    for name, fn in (("per sequence", per_sequence), ("one masked call", batched)):
        fn()
        start = time.thread_time()
        for _ in range(100):
            fn()
        print(f"{name}: {(time.thread_time() - start) * 1e4:.0f} us for {SLOTS} sequences")


if __name__ == "__main__":
    main()
