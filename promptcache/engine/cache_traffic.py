"""The step loop's traffic with the prefix cache: peeks, loads, saves, and the pins saves commit.

A part of `Engine` (a mixin), kept apart so that the loop in engine.py reads as schedule -> run
-> postprocess while what a sequence takes from and gives back to the cache is read in one place.
It uses the Engine's `prefix`, `retained`, `kv`, `scheduler`, `saves` and `_prefill_started`,
and runs under the Engine's lock (inside `step()` or an admin call that holds it).

Failures here cost the cache only: a failed peek loses the cache-aware admission order, a failed
load its hit (the prompt is computed cold), a failed save future hits. Neither fails a request.

Saves wait for the next step (save_queue.py), so saving never delays an output; a sequence
keeps its slot until its last save has run. A request with a `pin_owner` has what its save
inserted pinned for that owner in the same step, and its reservation settled once nothing more
of it is queued.
"""

from __future__ import annotations

import logging
import time

import torch

from promptcache.cache.keys import PromptKeys
from promptcache.cache.retained import PinLedger
from promptcache.engine.api import RequestOutput
from promptcache.engine.prefix_reuse import PrefixReuse, block_roles
from promptcache.engine.save_queue import PendingSave, SaveQueue
from promptcache.engine.scheduler import Scheduler
from promptcache.engine.sequence import Sequence

logger = logging.getLogger(__name__)


class CacheTraffic:
    # Set by Engine.__init__; read here.
    prefix: PrefixReuse | None
    retained: PinLedger | None
    kv: torch.Tensor
    scheduler: Scheduler
    saves: SaveQueue
    max_batch_size: int
    _prefill_started: dict[str, float]  # request id -> admission time, for the tier planner

    # -- reads ---------------------------------------------------------------------------------

    def _keys(self, seq: Sequence) -> PromptKeys:
        """seq's prompt as cache block keys, computed on first use and kept."""
        if seq.prompt_keys is None:
            seq.prompt_keys = self.prefix.prompt_keys(seq.prompt, seq.request.cache)
        return seq.prompt_keys

    def _peek_cached(self, seq: Sequence) -> int:
        """Prompt tokens of seq the cache holds now: the scheduler's admission order."""
        if self.prefix is None or not seq.request.cache.enabled:
            return 0
        try:
            return self.prefix.peek(self._keys(seq), seq.request.cache)
        except Exception:  # noqa: BLE001 - a failing peek only loses the cache-aware order
            logger.exception("prefix cache peek failed for request %s", seq.request_id)
            return 0

    def _load_cached(self, seq: Sequence, outputs: list[RequestOutput]) -> None:
        """Copy seq's cached prefix into its new slot; a failing load costs only the hit."""
        if self.prefix is None or not seq.request.cache.enabled:
            return
        if self.prefix.tiers is not None:
            if len(self._prefill_started) > 4 * self.max_batch_size:  # left by aborted requests
                self._prefill_started.clear()
            self._prefill_started[seq.request_id] = time.perf_counter()
        try:
            if seq.prompt_records is None:
                seq.num_cached = self.prefix.load(self._keys(seq), seq.request.cache, self.kv, seq.slot)
            else:  # only blocks holding prompt logprobs count; the last cached row is computed again
                seq.num_cached, cached = self.prefix.load_scored(self._keys(seq), seq.request.cache, self.kv, seq.slot)
                seq.prompt_records[:seq.num_cached] = cached
                seq.rewind = 1 if seq.num_cached else 0
            seq.cached_tiers = dict(self.prefix.last_sources) if seq.num_cached else {}
        except Exception:  # noqa: BLE001 - the request runs cold instead
            logger.exception("prefix cache load failed for request %s; computing it cold", seq.request_id)
            seq.num_cached, seq.rewind = 0, 0

    # -- writes --------------------------------------------------------------------------------

    def _queue_prompt_save(self, seq: Sequence) -> None:
        """Queue the save of seq's prompt, whose prefill just ended, for the next step; and tell
        the tier planner how fast that prefill ran, which it weighs tier reads against."""
        if self.prefix is None or not seq.request.cache.enabled:
            return
        bs = self.prefix.block_size
        roles = block_roles(seq.request.token_roles, seq.num_prompt // bs, bs)
        self.saves.add(PendingSave(seq, self._keys(seq), roles, side=seq.prompt_records))
        started = self._prefill_started.pop(seq.request_id, None)
        if started is not None:
            self.prefix.tiers.observe_prefill(seq.num_prompt - seq.num_cached, time.perf_counter() - started)

    def _queue_final_save(self, seq: Sequence, save: bool) -> None:
        """Queue what a finishing sequence leaves to the cache, then its slot is freed. A
        reply's save covers its prompt's; with nothing to save, the slot is freed now."""
        prompt_save = self.saves.take(seq)
        cache = seq.request.cache
        if save and self.prefix is not None and cache.enabled and cache.cache_reply and seq.output_ids:
            # KV exists for every token but the last sampled one (never fed to the model).
            tokens = seq.all_ids[: seq.length - 1]
            bs = self.prefix.block_size
            roles = block_roles(seq.request.token_roles, seq.num_prompt // bs, bs)
            roles += ["assistant"] * (len(tokens) // bs - len(roles))
            self.saves.add(PendingSave(seq, tokens, roles, then_free_slot=True, side=seq.prompt_records))
        elif save and prompt_save is not None:
            prompt_save.then_free_slot = True
            self.saves.add(prompt_save)
        else:
            self.scheduler.free_slot(seq)

    def _run_saves(self, outputs: list[RequestOutput]) -> None:
        """Run the queued saves: at the start of a step, or before an admin call reads the cache
        so that it sees every finished request's blocks."""
        for save in self.saves.drain():
            try:
                self.prefix.save(save.tokens, save.seq.request.cache, self.kv, save.seq.slot, save.roles, save.side)
                if save.seq.request.cache.pin_owner is not None:
                    self._commit_pin(save.seq, len(save.tokens))
            except Exception:  # noqa: BLE001 - a lost save costs future hits, nothing else
                logger.exception("saving blocks of request %s to the prefix cache failed", save.seq.request_id)
            finally:
                if save.then_free_slot:
                    self.scheduler.free_slot(save.seq)
                    self._settle_pin(save.seq)

    # -- pins of retained prefixes (cache/retained.py) -----------------------------------------

    def _commit_pin(self, seq: Sequence, num_tokens: int) -> None:
        """Pin what the save just inserted for the request's owner, in the same step: nothing
        can evict the new blocks in between."""
        options = seq.request.cache
        tokens = seq.all_ids[:num_tokens]
        self.retained.commit(seq.request_id, options.pin_owner, tokens, self.prefix.namespace(options))
        self.prefix.pin_to_tiers(tokens, options)

    def _settle_pin(self, seq: Sequence) -> None:
        """seq's request is over: drop its pin reservation (what its saves pinned stays pinned)."""
        if self.retained is not None and seq.request.cache.pin_owner is not None:
            self.retained.settle(seq.request_id)
