"""The engine: requests in, token deltas out, one `step()` at a time.

`step()` reads as schedule -> run -> postprocess:
1. take in new requests and aborts (other threads hand them over through a locked inbox), and
   run the saves to the prefix cache queued by the previous step;
2. schedule: the scheduler admits waiting sequences into free KV slots (copying cached prefixes
   in) and plans at most one prefill chunk plus one decode step for every running sequence;
3. run the plan on the model;
4. postprocess: sample, detokenize, finish; queue the saves of completed blocks.

Failures stay with their request. A fault in one sequence's sampling, detokenizing or stop
strings finishes that sequence alone with finish_reason "error". A failed cache peek or load
costs only its hit (the prompt is computed cold), and a failed save only future hits (its new
blocks are taken out again). A fault of the model run itself fails the sequences of that plan
and frees their slots; the others wait, and the loop goes on.

Only one thread may call `step()`; `add_request`, `abort_request` and the admin methods are
safe from any thread.
"""

from __future__ import annotations

import logging
import threading
import time

import torch

from promptcache.cache.config import CacheConfig
from promptcache.cache.divergence import Divergence
from promptcache.cache.keys import PromptKeys
from promptcache.cache.retained import PinLedger
from promptcache.engine.api import (CacheOptions, Completion, EngineInputError, Request, RequestOutput,
                                    SamplingParams)
from promptcache.engine.detokenizer import IncrementalDetokenizer
from promptcache.engine.loading import load_model, resolve_device, resolve_dtype
from promptcache.engine.logprobs import as_token_logprob, empty_records, prompt_logprobs, prompt_records, records
from promptcache.engine.prefix_reuse import PrefixReuse, block_roles
from promptcache.engine.sampler import new_generator, sample
from promptcache.engine.structured.compiler import GrammarCompiler
from promptcache.engine.structured.constraint import Constraint, MaskBatch, apply_mask
from promptcache.engine.save_queue import PendingSave, SaveQueue
from promptcache.engine.scheduler import Scheduler, StepPlan
from promptcache.engine.sequence import Sequence, Status
from promptcache.model.llama import LlamaModel
from promptcache.model.numerics import model_id, numerics_class
from promptcache.model.source import open_model
from promptcache.model.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

# The cache of an engine used by one caller (the CLI, benchmarks): its one tenant may fill it.
SINGLE_TENANT = CacheConfig(default_tenant_share=1.0)


class Engine:
    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, *, model_name: str, fingerprint: str,
                 cache_config: CacheConfig | None = SINGLE_TENANT, max_batch_size: int = 8,
                 prefill_chunk: int = 512, max_prefill_chunk: int = 2048, max_seq_len: int | None = None,
                 share_kv_across_numerics: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.context_length = min(max_seq_len or model.config.context_length, model.config.context_length)
        self.max_batch_size = max_batch_size
        self.kv = model.new_kv(max_batch_size, self.context_length)
        c = model.config
        # The namespace of cache entries: weights plus numerics (dtype, decode quantization, kernel
        # family), since KV from another numerics class is not bitwise the same (numerics.py).
        self.numerics = numerics_class(model.dtype, model.quantize, model.device)
        self.model_id = model_id(fingerprint, self.numerics, share_across_numerics=share_kv_across_numerics)
        self.prefix: PrefixReuse | None = None
        if cache_config is not None:
            self.prefix = PrefixReuse(cache_config, model_id=self.model_id, layers=c.num_layers,
                                      kv_heads=c.num_kv_heads, head_dim=c.head_dim, kv_dtype=model.kv_dtype,
                                      device=model.device)
        self.retained: PinLedger | None = PinLedger(self.prefix.cache) if self.prefix is not None else None
        self.scheduler = Scheduler(max_batch_size, self._peek_cached, prefill_chunk=prefill_chunk,
                                   max_prefill_chunk=max_prefill_chunk)
        self.saves = SaveQueue()
        self._stats_snapshot = self._stats_now()
        self._by_id: dict[str, Sequence] = {}
        self._lock = threading.RLock()  # held by step() and the admin methods
        self._inbox_lock = threading.Lock()
        self._inbox: list[Request] = []
        self._aborts: set[str] = set()
        # Output constraints (response_format, tools): callers compile them off the loop through
        # `grammars`; the masks of a step are computed while the model runs it.
        self.grammars = GrammarCompiler(tokenizer, vocab_size=model.config.vocab_size)
        self._masks = MaskBatch(model.config.vocab_size)
        self._row_masks: dict[int, torch.Tensor] = {}
        self._prefill_started: dict[str, float] = {}  # request id -> admission time (tier planner)

    @classmethod
    def from_model(cls, model: str | None = None, *, device: str = "auto", dtype: str = "auto",
                   cache_config: CacheConfig | None = SINGLE_TENANT, max_batch_size: int = 8,
                   prefill_chunk: int = 512, max_prefill_chunk: int = 2048, max_seq_len: int | None = None,
                   progress: bool = False, quantize: str | None = None, deterministic: bool = True,
                   share_kv_across_numerics: bool = False) -> Engine:
        source = open_model(model)
        dev = resolve_device(device)
        llama = load_model(source, dtype=resolve_dtype(dtype, dev), device=dev, progress=progress, quantize=quantize,
                           deterministic=deterministic)
        return cls(llama, source.tokenizer, model_name=source.name, fingerprint=source.fingerprint,
                   cache_config=cache_config, max_batch_size=max_batch_size, prefill_chunk=prefill_chunk,
                   max_prefill_chunk=max_prefill_chunk, max_seq_len=max_seq_len,
                   share_kv_across_numerics=share_kv_across_numerics)

    # -- requests in ---------------------------------------------------------------------------

    def validate(self, request: Request) -> None:
        """Raise EngineInputError for a request that cannot run; cheap, no state touched. The
        error names the engine's own fields (prompt, max_tokens, ...); a server maps them to
        its dialect's parameter names."""
        request.sampling.validate()
        if not request.prompt_tokens:
            raise EngineInputError("the prompt is empty", "prompt")
        if any(not 0 <= t < self.model.config.vocab_size for t in request.prompt_tokens):
            raise EngineInputError("the prompt contains token ids outside the vocabulary", "prompt")
        n, m = len(request.prompt_tokens), request.sampling.max_tokens
        if n + m > self.context_length:
            raise EngineInputError(
                f"this model's context length is {self.context_length} tokens; the prompt has {n} "
                f"and max_tokens is {m}", "max_tokens" if n < self.context_length else "prompt")

    def add_request(self, request: Request) -> None:
        """Queue `request`. One with a `pin_owner` is admitted against its tenant's pin budget
        first (PinBudgetExceeded, nothing queued, when its prefix does not fit)."""
        self.validate(request)
        owner = request.cache.pin_owner
        if owner is not None:
            if self.retained is None or not request.cache.enabled:
                raise EngineInputError("retaining a prefix needs the prefix cache", "prompt")
            self.retained.reserve(request.request_id, owner, request.cache.tenant, len(request.prompt_tokens))
        with self._inbox_lock:
            self._inbox.append(request)

    def abort_request(self, request_id: str) -> None:
        with self._inbox_lock:
            self._aborts.add(request_id)

    def has_unfinished(self) -> bool:
        with self._inbox_lock:
            pending = bool(self._inbox)
        return pending or bool(self._by_id) or bool(self.saves)

    def num_waiting(self) -> int:
        with self._inbox_lock:
            return len(self._inbox) + self.scheduler.num_waiting()

    def num_running(self) -> int:
        return self.scheduler.num_active()

    # -- the loop ------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        outputs: list[RequestOutput] = []
        with self._lock:
            self._take_inbox(outputs)
            self._run_saves(outputs)
            plan = self.scheduler.schedule(lambda seq: self._load_cached(seq, outputs))
            masking = self._start_masks(plan)
            try:
                prefill_logits, decode_logits = self._run(plan)
                self._row_masks = self._collect_masks(masking)
            except Exception:  # noqa: BLE001 - a fault of the whole step: fail its sequences only
                logger.exception("engine step failed; failing the %d sequences of this step", len(plan.sequences))
                for seq in plan.sequences:
                    self._fail(seq, "the engine failed while computing this request", outputs, save=False)
                return outputs
            self._postprocess(plan, prefill_logits, decode_logits, outputs)
            self._stats_snapshot = self._stats_now()  # one assignment: readers see whole dicts
        return outputs

    def _take_inbox(self, outputs: list[RequestOutput]) -> None:
        with self._inbox_lock:
            requests, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, set()
        for request in requests:
            detokenizer = IncrementalDetokenizer(self.tokenizer, request.sampling.stop,
                                                 request.sampling.skip_special_tokens)
            seq = Sequence(request, detokenizer,
                           new_generator(request.sampling))
            if request.structure is not None:
                seq.constraint = Constraint(request.structure)
            if request.sampling.prompt_logprobs is not None:
                seq.prompt_records = empty_records(len(request.prompt_tokens))
            self._by_id[request.request_id] = seq
            self.scheduler.add(seq)
        for request_id in aborts:
            seq = self._by_id.get(request_id)
            if seq is not None:
                self._finish(seq, "abort", outputs, save=False)

    def _keys(self, seq: Sequence) -> PromptKeys:
        """seq's prompt as cache block keys, computed on first use and kept."""
        if seq.prompt_keys is None:
            seq.prompt_keys = self.prefix.prompt_keys(seq.prompt, seq.request.cache)
        return seq.prompt_keys

    def _peek_cached(self, seq: Sequence) -> int:
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

    def _run(self, plan: StepPlan) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The model's part of a step: one prefill chunk, one decode step."""
        prefill_logits = decode_logits = None
        if plan.prefill is not None:
            chunk = plan.prefill
            tokens = torch.tensor(chunk.seq.prompt[chunk.start:chunk.end], device=self.model.device)
            if chunk.seq.prompt_records is None:
                prefill_logits = self.model.prefill(tokens, chunk.start, chunk.seq.slot, self.kv,
                                                    want_logits=chunk.last)
            else:
                prefill_logits = self._scored_prefill(chunk.seq, tokens, chunk.start, chunk.last)
            chunk.seq.num_computed = chunk.end
        if plan.decode:
            tokens = torch.tensor([s.output_ids[-1] for s in plan.decode], device=self.model.device)
            positions = [s.length - 1 for s in plan.decode]
            decode_logits = self.model.decode(tokens, positions, [s.slot for s in plan.decode], self.kv)
        return prefill_logits, decode_logits

    def _scored_prefill(self, seq: Sequence, tokens: torch.Tensor, start: int, last: bool) -> torch.Tensor | None:
        """A prefill chunk that also scores the prompt: every row's logits give the next prompt
        token's logprob record; the last row's are the first token's logits, as ever."""
        hidden = self.model.prefill(tokens, start, seq.slot, self.kv, want_logits=False, hidden=True)
        scored = prompt_records(self.model.logits, hidden, start, seq.prompt)
        seq.prompt_records[start + 1:start + 1 + len(scored)] = scored
        return self.model.logits(hidden[-1:])[0] if last else None

    def _postprocess(self, plan: StepPlan, prefill_logits: torch.Tensor | None, decode_logits: torch.Tensor | None,
                     outputs: list[RequestOutput]) -> None:
        if plan.prefill is not None and plan.prefill.last:
            seq = plan.prefill.seq
            self.scheduler.prefill_done(seq)
            if self.prefix is not None and seq.request.cache.enabled:
                bs = self.prefix.block_size
                roles = block_roles(seq.request.token_roles, seq.num_prompt // bs, bs)
                self.saves.add(PendingSave(seq, self._keys(seq), roles, side=seq.prompt_records))
                started = self._prefill_started.pop(seq.request_id, None)
                if started is not None:  # the planner weighs tier reads against this rate
                    self.prefix.tiers.observe_prefill(seq.num_prompt - seq.num_cached, time.perf_counter() - started)
            self._sample_and_append([seq], prefill_logits[None], outputs)
        if plan.decode:
            self._sample_and_append(plan.decode, decode_logits, outputs)

    def _sample_and_append(self, batch: list[Sequence], logits: torch.Tensor, outputs: list[RequestOutput]) -> None:
        for row, seq in enumerate(batch):
            try:
                row_logits = logits[row:row + 1]
                if seq.constraint is not None:
                    row_logits = apply_mask(row_logits, self._row_masks[id(seq)])
                token = sample(row_logits, [seq.request.sampling], [seq.generator])[0]
                if seq.constraint is not None and not seq.constraint.accept(token):
                    raise ValueError("the output grammar refused a token drawn under its own mask")
                if seq.request.sampling.logprobs is not None:  # raw: the model's row, before any mask
                    seq.last_logprob = records(logits[row:row + 1], torch.tensor([token]))[0]
                self._append_token(seq, token, outputs)
            except Exception:  # noqa: BLE001 - this request's fault alone
                logger.exception("postprocessing failed for request %s", seq.request_id)
                self._fail(seq, "the engine failed while sampling or decoding this request's text", outputs)

    def _start_masks(self, plan: StepPlan):
        """Start computing the token masks of the plan's constrained rows (None if none)."""
        rows = list(plan.decode)
        if plan.prefill is not None and plan.prefill.last:
            rows.append(plan.prefill.seq)
        if all(seq.constraint is None for seq in rows):
            return None
        return rows, self._masks.start([seq.constraint for seq in rows])

    def _collect_masks(self, masking) -> dict[int, torch.Tensor]:
        if masking is None:
            return {}
        rows, pending = masking
        bitmask = MaskBatch.wait(pending)
        return {id(seq): bitmask[i] for i, seq in enumerate(rows) if seq.constraint is not None}

    def _run_saves(self, outputs: list[RequestOutput]) -> None:
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

    def _commit_pin(self, seq: Sequence, num_tokens: int) -> None:
        """Pin what the save just inserted for the request's owner, in the same step: nothing
        can evict the new blocks in between."""
        options = seq.request.cache
        tokens = seq.all_ids[:num_tokens]
        self.retained.commit(seq.request_id, options.pin_owner, tokens, self.prefix.namespace(options))
        self.prefix.pin_to_tiers(tokens, options)

    def _settle_pin(self, seq: Sequence) -> None:
        if self.retained is not None and seq.request.cache.pin_owner is not None:
            self.retained.settle(seq.request_id)

    # -- postprocess ---------------------------------------------------------------------------

    def _append_token(self, seq: Sequence, token: int, outputs: list[RequestOutput]) -> None:
        seq.output_ids.append(token)
        params = seq.request.sampling
        if token in self.tokenizer.eos_token_ids and not params.ignore_eos:
            self._finish(seq, "stop", outputs, last_token=token, emit_token=False)
            return
        text = seq.detokenizer.push(token)
        if seq.detokenizer.stopped:
            self._finish(seq, "stop", outputs, text=text, last_token=token)
        elif seq.constraint is not None and seq.constraint.finished:  # the structure is complete
            self._finish(seq, "stop", outputs, text=text, last_token=token)
        elif len(seq.output_ids) >= params.max_tokens or seq.length >= self.context_length:
            self._finish(seq, "length", outputs, text=text + seq.detokenizer.flush(), last_token=token)
        else:
            outputs.append(self._output(seq, text, [token]))

    def _fail(self, seq: Sequence, message: str, outputs: list[RequestOutput], *, save: bool = True) -> None:
        if seq.status is Status.FINISHED:
            return
        seq.error = message
        self._finish(seq, "error", outputs, save=save)

    def _finish(self, seq: Sequence, reason: str, outputs: list[RequestOutput], *, text: str = "",
                last_token: int | None = None, emit_token: bool = True, save: bool = True) -> None:
        if reason == "stop" and not seq.detokenizer.stopped:
            text += seq.detokenizer.flush()
        seq.finish_reason = reason
        self.scheduler.remove(seq)
        if seq.slot is not None:
            self._queue_final_save(seq, save)
        seq.status = Status.FINISHED
        if self.saves.find(seq) is None:  # else its last save settles it
            self._settle_pin(seq)
        del self._by_id[seq.request_id]
        new_ids = [last_token] if (last_token is not None and emit_token) else []
        outputs.append(self._output(seq, text, new_ids))

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

    def _output(self, seq: Sequence, text: str, new_ids: list[int]) -> RequestOutput:
        out = RequestOutput(
            request_id=seq.request_id, new_text=text, new_token_ids=new_ids,
            finished=seq.status is Status.FINISHED, finish_reason=seq.finish_reason,
            num_prompt_tokens=seq.num_prompt, num_cached_tokens=seq.num_cached,
            num_generated_tokens=len(seq.output_ids), error=seq.error, cached_tiers=seq.cached_tiers)
        if seq.request.sampling.logprobs is not None:
            out.new_logprobs = [as_token_logprob(t, seq.last_logprob) for t in new_ids if seq.last_logprob is not None]
        if seq.prompt_records is not None and seq.output_ids and not seq.prompt_sent:
            out.prompt_logprobs = prompt_logprobs(seq.prompt, seq.prompt_records)
            seq.prompt_sent = True
        return out

    # -- conveniences and admin ----------------------------------------------------------------

    def generate(self, prompts: list[list[int]], sampling: SamplingParams = SamplingParams(),
                 cache: CacheOptions = CacheOptions()) -> list[Completion]:
        """Run prompts to completion (batched together) and return their results in order."""
        base = f"gen-{time.monotonic_ns()}-"
        ids = [base + str(i) for i in range(len(prompts))]
        for request_id, prompt in zip(ids, prompts):
            self.add_request(Request(request_id, list(prompt), sampling, cache))
        texts = {i: [] for i in ids}
        tokens = {i: [] for i in ids}
        done: dict[str, RequestOutput] = {}
        while len(done) < len(ids):
            for out in self.step():
                texts[out.request_id].append(out.new_text)
                tokens[out.request_id].extend(out.new_token_ids)
                if out.finished:
                    done[out.request_id] = out
        return [Completion(i, "".join(texts[i]), tokens[i], done[i].finish_reason,
                           done[i].num_prompt_tokens, done[i].num_cached_tokens) for i in ids]

    def explain_prefix(self, tokens: list[int], options: CacheOptions) -> tuple[int, Divergence | None]:
        """How many leading tokens of `tokens` the cache holds now in `options`' namespace, and
        how the prompt continues past them (None when every full block is held): the read
        behind /v1/cache/explain, under the engine's lock so the trie it walks is consistent.
        It touches nothing: no lease, no recency, no stats."""
        if self.prefix is None or not options.enabled:
            return 0, None
        with self._lock:
            held = self.prefix.peek(tokens, options)
            if held >= len(tokens) // self.prefix.block_size * self.prefix.block_size:
                return held, None
            return held, self.prefix.divergence(tokens, options, held)

    def explain_tiers(self, tokens: list[int], options: CacheOptions, held: int) -> dict[str, int]:
        """Tokens of `tokens` past memory's `held` that the disk or Redis tiers hold, by tier, as
        a load would find them (existence checks only, no lock: the tiers have their own)."""
        if self.prefix is None:
            return {}
        return self.prefix.lower_tiers(tokens, options, held)

    def cache_stats(self, wait: bool = True) -> dict:
        """The prefix cache's statistics.

        wait=True (admin): takes the engine's lock and runs pending saves first, so every
        finished request's blocks are counted. wait=False (metrics scrapes): the copy taken at
        the end of the last step, read without the lock, so a scrape never stalls a step."""
        if not wait:
            return dict(self._stats_snapshot)
        with self._lock:
            self._run_saves([])  # admin sees every finished request's blocks
            return self._stats_now()

    def _stats_now(self) -> dict:
        if self.prefix is None:
            return {"enabled": False}
        stats = self.prefix.cache.stats.as_dict()
        pool = self.prefix.pool
        stats.update(enabled=True, block_size=self.prefix.block_size, block_nbytes=self.prefix.block_nbytes,
                     max_bytes=pool.num_blocks * self.prefix.block_nbytes)
        if self.prefix.tiers is not None:
            stats.update(self.prefix.tiers.stats())
        return stats

    def flush_cache(self, tenant: str | None = None, include_pinned: bool = False) -> int:
        """Drop unheld blocks (of `tenant` only, when given); with include_pinned, pins first."""
        with self._lock:
            self._run_saves([])  # admin sees every finished request's blocks
            if self.prefix is None:
                return 0
            if include_pinned:
                self.retained.forget(tenant)
            return self.prefix.cache.flush(tenant, include_pinned=include_pinned)

    def pin_prefix(self, tokens: list[int], tenant: str, salt: str | None = None) -> int:
        return self._pinning(tokens, tenant, salt, pin=True)

    def unpin_prefix(self, tokens: list[int], tenant: str, salt: str | None = None) -> int:
        return self._pinning(tokens, tenant, salt, pin=False)

    def _pinning(self, tokens: list[int], tenant: str, salt: str | None, *, pin: bool) -> int:
        with self._lock:
            self._run_saves([])  # admin sees every finished request's blocks
            if self.prefix is None:
                return 0
            namespace = self.prefix.namespace(CacheOptions(tenant=tenant, salt=salt))
            cache = self.prefix.cache
            if not pin:
                return cache.unpin(tokens, namespace)
            pinned = cache.pin(tokens, namespace)
            self.prefix.pin_to_tiers(tokens, CacheOptions(tenant=tenant, salt=salt))
            return pinned

    def reserve_retained(self, request: Request) -> int:
        """Admit `request`'s prefix for its `pin_owner` now, counting the blocks already pinned
        along it (a trie walk, hence the lock); `add_request` then finds it reserved. Raises
        PinBudgetExceeded. Returns the blocks reserved."""
        options = request.cache
        if self.retained is None or options.pin_owner is None or not options.enabled:
            raise EngineInputError("retaining a prefix needs the prefix cache", "prompt")
        with self._lock:
            pinned = self.prefix.cache.pinned_blocks(request.prompt_tokens, self.prefix.namespace(options))
            return self.retained.reserve(request.request_id, options.pin_owner, options.tenant,
                                         len(request.prompt_tokens), pinned)

    def release_retained(self, owner: str) -> int:
        """Unpin what `owner` retains (blocks stay cached as ordinary entries); returns blocks."""
        if self.retained is None:
            return 0
        with self._lock:
            return self.retained.release(owner)

    def retained_blocks(self, owner: str) -> int:
        """How many blocks `owner` keeps pinned now (0 after a restart, until retained again);
        runs the pending saves first, so a finished request's pin is counted."""
        if self.retained is None:
            return 0
        with self._lock:
            self._run_saves([])
            held = self.retained.held(owner)
        return held.blocks if held is not None else 0

    # -- lower storage tiers (promptcache.tiers) -----------------------------------------------

    def attach_tiers(self, tiers) -> None:
        """Put disk/Redis tiers (a `TierStack`) under the prefix cache; before serving only."""
        if self.prefix is None:
            raise ValueError("storage tiers need the prefix cache (it is switched off)")
        self.prefix.tiers = tiers

    def close_tiers(self, timeout_s: float = 10.0) -> bool:
        """Run pending saves, then drain the tiers' write-behind queue (graceful shutdown)."""
        if self.prefix is None or self.prefix.tiers is None:
            return True
        with self._lock:
            self._run_saves([])
        return self.prefix.tiers.close(timeout_s)
