"""How many CPU threads a decode step runs on.

A decode step of a small model is some 2,000 small ops (SmolLM2-135M: ~270 MB of weights read
in 120 products plus norms, rope, KV writes and per-sequence attention). With an OpenMP team of
two, every op ends at a barrier where one thread waits for the other; when anything else wants a
core (the HTTP event loop, a client on the same machine, a second process) the waiting thread
is descheduled and each barrier costs a time slice. Measured on the 2-core development VM
(docs/benchmarks.md, "Decode threads"): a batch-1 SmolLM2 step took 19-25 ms on one thread and
59-1,250 ms on two while another process used a core, while one thread streams the step's bytes
at ~23 GB/s, close to what a second core adds. So a model whose weights are small steps on fewer
threads than prefill, whose products are large enough to pay for the barriers.

The rule: one decode thread per DECODE_BYTES_PER_THREAD of weights read per step, at least one,
at most the threads torch has. SmolLM2 gets one; a 1B model in bfloat16 (~2.5 GB) four; an 8B
model every thread. `--decode-threads` overrides it.

Products are probed batch-invariant at both thread counts (llama.py), and every decode step
runs at the same count, so a sequence's tokens do not depend on the batch or on the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

DECODE_BYTES_PER_THREAD = 512 * 2**20


def default_decode_threads(weight_bytes: int, available: int) -> int:
    """Threads for a decode step that reads `weight_bytes`, out of `available`."""
    return max(1, min(available, weight_bytes // DECODE_BYTES_PER_THREAD))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op threads (this thread's OpenMP team) set to n, then
    restore the previous count; n None leaves it as it is."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
