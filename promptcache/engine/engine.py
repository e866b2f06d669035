"""The engine: requests in, token deltas out, one `step()` at a time.

`step()` reads as schedule -> run -> postprocess:
1. take in new requests and aborts (other threads hand them over through a locked inbox), and
   run the saves to the prefix cache queued by the previous step;
2. schedule: the scheduler admits waiting sequences into free KV slots (copying cached prefixes
   in) and plans at most one prefill chunk plus one decode step for every running sequence;
3. run the plan on the model;
4. postprocess: sample, detokenize, finish; queue the saves of completed blocks.

Failures stay with their request. A request that cannot be taken in (its generator, grammar or
records fail to build) finishes alone with finish_reason "error" in the step that takes it in; a
fault in one sequence's sampling, detokenizing or stop strings finishes that sequence alone, and
one in computing the output grammars' masks the constrained sequences of that step alone. A failed cache peek or load
costs only its hit (the prompt is computed cold), and a failed save only future hits (its new
blocks are taken out again). A fault of the model run itself fails the sequences of that plan
and frees their slots; the others wait, and the loop goes on.

Only one thread may call `step()`; `add_request`, `abort_request` and the admin methods are
safe from any thread.

The Engine is one object in four files, one concern each: this one holds the state, request
intake and the loop; the loop's peeks, loads, saves and pins of the prefix cache are in
cache_traffic.py, how a sampled token emits or ends its sequence in outcomes.py, and the admin
calls (explain, stats, flush, pins, retained prefixes, tiers) in cache_admin.py.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

import torch

from promptcache.cache.config import CacheConfig
from promptcache.cache.retained import PinLedger
from promptcache.engine.api import (CacheOptions, Completion, EngineInputError, Request, RequestOutput,
                                    SamplingParams)
from promptcache.engine.cache_admin import CacheAdmin
from promptcache.engine.cache_traffic import CacheTraffic
from promptcache.engine.detokenizer import IncrementalDetokenizer
from promptcache.engine.loading import load_model, resolve_device, resolve_dtype
from promptcache.engine.logprobs import empty_records, prompt_records, records
from promptcache.engine.outcomes import Outcomes
from promptcache.engine.penalties import penalize
from promptcache.engine.preemption import Preemption
from promptcache.engine.prefix_reuse import PrefixReuse
from promptcache.engine.sampler import new_generator, sample
from promptcache.engine.structured.compiler import GrammarCompiler
from promptcache.engine.structured.constraint import Constraint, MaskBatch, apply_mask
from promptcache.engine.save_queue import SaveQueue
from promptcache.engine.scheduler import Scheduler, StepPlan
from promptcache.engine.sequence import Sequence, Status
from promptcache.model.llama import LlamaModel
from promptcache.model.numerics import model_id, numerics_class
from promptcache.model.source import open_model
from promptcache.model.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

# The cache of an engine used by one caller (the CLI, benchmarks): its one tenant may fill it.
SINGLE_TENANT = CacheConfig(default_tenant_share=1.0)


class Engine(CacheAdmin, CacheTraffic, Outcomes, Preemption):
    """An LLM with its KV slots, prefix cache and scheduler, stepped by one thread.

    All state is set here; the mixins (cache_admin.py, cache_traffic.py, outcomes.py, preemption.py) add
    methods over it and own none of their own, so that `Engine` stays the one object that
    callers, tests and the scale-out replicas see."""

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
        self.numerics = numerics_class(model.dtype, model.quantize, model.device, getattr(model.head, "kind", None))
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
                   share_kv_across_numerics: bool = False, decode_threads: int | None = None) -> Engine:
        source = open_model(model)
        dev = resolve_device(device)
        llama = load_model(source, dtype=resolve_dtype(dtype, dev), device=dev, progress=progress, quantize=quantize,
                           deterministic=deterministic, decode_threads=decode_threads)
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
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in request.prompt_tokens):
            raise EngineInputError("the prompt contains token ids outside the vocabulary", "prompt")
        if any(not 0 <= t < vocab for t, _ in request.sampling.logit_bias):
            raise EngineInputError(f"logit_bias names token ids outside the vocabulary (0..{vocab - 1})",
                                   "logit_bias")
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
            plan = self.scheduler.schedule(lambda seq: self._load_cached(seq, outputs), self._park,
                                           lambda seq: self._resume(seq, outputs))
            masking = self._start_masks(plan)
            try:
                prefill_logits, decode_logits = self._run(plan)
            except Exception:  # noqa: BLE001 - a fault of the whole step: fail its sequences only
                logger.exception("engine step failed; failing the %d sequences of this step", len(plan.sequences))
                for seq in plan.sequences:
                    self._fail(seq, "the engine failed while computing this request", outputs, save=False)
                return outputs
            self._row_masks = self._collect_masks(masking, outputs)
            self._postprocess(plan, prefill_logits, decode_logits, outputs)
            try:
                self._stats_snapshot = self._stats_now()  # one assignment: readers see whole dicts
            except Exception:  # noqa: BLE001 - stale stats cost no request its outputs
                logger.exception("refreshing the engine's stats failed")
        return outputs

    def _take_inbox(self, outputs: list[RequestOutput]) -> None:
        """Turn the requests handed over since the last step into waiting sequences, and finish
        the aborted ones. Each request is taken in on its own: one that fails finishes alone."""
        with self._inbox_lock:
            requests, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, set()
        for request in requests:
            try:
                self._take_in(request)
            except Exception:  # noqa: BLE001 - this request's fault alone
                logger.exception("taking in request %s failed; failing it alone", request.request_id)
                self._fail_intake(request, outputs)
        for request_id in aborts:
            seq = self._by_id.get(request_id)
            if seq is not None:
                self._finish(seq, "abort", outputs, save=False)

    def _take_in(self, request: Request) -> None:
        """request as a waiting sequence; registered last, after everything that may raise."""
        sampling = request.sampling
        detokenizer = IncrementalDetokenizer(self.tokenizer, sampling.stop, sampling.skip_special_tokens)
        seq = Sequence(request, detokenizer, new_generator(sampling))
        if request.structure is not None:
            seq.constraint = Constraint(request.structure)
        if request.sampling.prompt_logprobs is not None:
            seq.prompt_records = empty_records(len(request.prompt_tokens))
        self._by_id[request.request_id] = seq
        self.scheduler.add(seq)

    def _fail_intake(self, request: Request, outputs: list[RequestOutput]) -> None:
        """A request that never became a sequence: it holds no slot and no queue place, so only
        its pin reservation (made by add_request) is settled, and one finished output says so."""
        if self.retained is not None and request.cache.pin_owner is not None:
            self.retained.settle(request.request_id)
        outputs.append(RequestOutput(
            request_id=request.request_id, new_text="", new_token_ids=[], finished=True, finish_reason="error",
            num_prompt_tokens=len(request.prompt_tokens), num_cached_tokens=0, num_generated_tokens=0,
            error="the engine could not take in this request"))

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
        if plan.prefill is not None and plan.prefill.last and plan.prefill.seq.status is not Status.FINISHED:
            seq = plan.prefill.seq
            self.scheduler.prefill_done(seq)
            try:
                self._queue_prompt_save(seq)
            except Exception:  # noqa: BLE001 - a lost save costs future hits, nothing else
                logger.exception("queueing the prompt save of request %s failed", seq.request_id)
            self._sample_and_append([seq], prefill_logits[None], outputs)
        if plan.decode:
            self._sample_and_append(plan.decode, decode_logits, outputs)

    def _sample_and_append(self, batch: list[Sequence], logits: torch.Tensor, outputs: list[RequestOutput]) -> None:
        for row, seq in enumerate(batch):
            if seq.status is Status.FINISHED:  # failed earlier in this step (its output grammar)
                continue
            try:
                row_logits = penalize(logits[row:row + 1], seq.request.sampling, seq.prompt, seq.output_ids)
                if seq.constraint is not None:  # after the penalties: a masked token stays out
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
        try:
            return rows, self._masks.start([seq.constraint for seq in rows])
        except Exception as exc:  # noqa: BLE001 - failed when collected: the constrained rows alone
            failed: Future = Future()
            failed.set_exception(exc)
            return rows, failed

    def _collect_masks(self, masking, outputs: list[RequestOutput]) -> dict[int, torch.Tensor]:
        """The masks of the step's constrained rows. If computing them failed, those rows fail
        (their grammars are the fault); the unconstrained rows of the step go on."""
        if masking is None:
            return {}
        rows, pending = masking
        try:
            bitmask = MaskBatch.wait(pending)
        except Exception:  # noqa: BLE001 - the constrained requests' fault, not the others'
            logger.exception("computing the output grammars' masks failed; failing their requests")
            for seq in rows:
                if seq.constraint is not None:
                    self._fail(seq, "the engine failed while applying this request's output format", outputs)
            return {}
        return {id(seq): bitmask[i] for i, seq in enumerate(rows) if seq.constraint is not None}

    # -- conveniences --------------------------------------------------------------------------

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
