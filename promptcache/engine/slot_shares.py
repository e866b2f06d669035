"""How the batch slots are shared between tenants: whose turn it is, and whom to pause.

A tenant's share is the slots divided by the tenants with work in the engine (holding a slot, or
waiting for one). Two rules keep one tenant from holding every slot while another waits:

- **Turns.** A free slot goes to the waiting tenant that holds the fewest slots; among equals, to
  the one admitted least recently. So a tenant at or over its share never takes a slot that a
  tenant below it is waiting for.
- **Preemption.** When no slot is free, a waiting tenant holds fewer slots than its share, and
  another tenant holds at least two more than it, that tenant's longest-running generation (most
  tokens generated) is paused and its slot given to the waiting tenant. Two more, not one: moving
  one slot from a tenant holding one more would only swap the imbalance. Every pause lowers the
  sum of squares of the slots held, so pauses come to a stop; they settle where every waiting
  tenant holds its share or the holdings differ by at most one.

Only a running sequence is paused: a prefilling one gets its first token within a few steps,
and pausing it would keep half a prompt. These functions only choose; the scheduler moves the
sequences, and the engine moves their KV (preemption.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from promptcache.engine.sequence import Sequence


def slots_held(sequences: Iterable[Sequence]) -> Counter[str]:
    """Tenant -> slots its prefilling and running sequences hold."""
    return Counter(seq.tenant for seq in sequences)


def next_tenant(candidates: list[Sequence], held: Mapping[str, int], last_admitted: Mapping[str, int]) -> str:
    """The tenant whose turn it is: fewest slots held, then admitted least recently, then the
    first among `candidates` (the oldest)."""
    return min(candidates, key=lambda s: (held.get(s.tenant, 0), last_admitted.get(s.tenant, -1))).tenant


def preemption_victim(candidates: list[Sequence], running: list[Sequence], held: Mapping[str, int],
                      num_slots: int) -> Sequence | None:
    """The running sequence to pause so that a waiting tenant below its share gets a slot, or
    None when every waiting tenant has its share or no tenant holds two slots more than it."""
    if not candidates:
        return None
    waiting = {s.tenant for s in candidates}
    share = num_slots / len(waiting | {t for t, n in held.items() if n})
    needy = min(held.get(t, 0) for t in waiting)
    if needy >= share:
        return None
    over = [s for s in running if held.get(s.tenant, 0) >= needy + 2]
    # The tenant holding the most, and its longest-running generation; max() keeps the first
    # of equals, the one admitted earliest.
    return max(over, key=lambda s: (held[s.tenant], len(s.output_ids)), default=None)
