"""The engine: requests in, token deltas out, one `step()` at a time.

`step()` reads as schedule -> run -> postprocess:
1. take in new requests and aborts (other threads hand them over through a locked inbox);
2. admit waiting sequences into free KV slots (cache-aware order), copying cached prefixes in;
3. compute one prefill chunk of the oldest prefilling sequence (a short chunk while others are
   decoding, so a long prompt never stalls the batch for long; a long one when none is);
4. run one decode step for every running sequence, sample, detokenize, finish;
5. save completed blocks to the prefix cache: a prompt's at the start of the step after its
   prefill (so saving never delays its first token), a reply's when it finishes.

Only one thread may call `step()`; `add_request`, `abort_request` and the admin methods are
safe from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
import torch

from promptcache.cache.config import CacheConfig
from promptcache.engine.api import (CacheOptions, Completion, EngineInputError, Request, RequestOutput,
                                    SamplingParams)
from promptcache.engine.detokenizer import IncrementalDetokenizer
from promptcache.engine.loading import load_model, resolve_device, resolve_dtype
from promptcache.engine.prefix_reuse import MIN_ROWS, PrefixReuse, block_roles
from promptcache.engine.sampler import new_generator, sample
from promptcache.engine.scheduler import Scheduler
from promptcache.engine.sequence import Sequence, Status
from promptcache.model.llama import LlamaModel
from promptcache.model.source import open_model
from promptcache.model.tokenizer import Tokenizer


class Engine:
    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, *, model_name: str, fingerprint: str,
                 cache_config: CacheConfig | None = CacheConfig(), max_batch_size: int = 8,
                 prefill_chunk: int = 512, max_prefill_chunk: int = 2048, max_seq_len: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.context_length = min(max_seq_len or model.config.context_length, model.config.context_length)
        self.prefill_chunk = prefill_chunk  # tokens per step while other sequences decode
        self.max_prefill_chunk = max(max_prefill_chunk, prefill_chunk)  # when none does
        self.max_batch_size = max_batch_size
        self.kv = model.new_kv(max_batch_size, self.context_length)
        self._free_slots = list(range(max_batch_size - 1, -1, -1))
        c = model.config
        # The namespace of cache entries: weights, dtype and decode quantization (reply blocks are
        # computed by decode, so they differ with it).
        self.model_id = f"{fingerprint}:{str(model.dtype).removeprefix('torch.')}:{model.quantize or 'none'}"
        self.prefix: PrefixReuse | None = None
        if cache_config is not None:
            self.prefix = PrefixReuse(cache_config, model_id=self.model_id, layers=c.num_layers,
                                      kv_heads=c.num_kv_heads, head_dim=c.head_dim, kv_dtype=model.kv_dtype,
                                      device=model.device)
        self.scheduler = Scheduler(self._peek_cached)
        self.prefilling: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        # Saves to the prefix cache run at the start of the next step, after the outputs that
        # were waiting on the KV went out: (sequence, tokens to insert, block roles, free the
        # sequence's slot afterwards).
        self._pending_saves: list[tuple[Sequence, list[int], list[str], bool]] = []
        self._by_id: dict[str, Sequence] = {}
        self._lock = threading.RLock()  # held by step() and the admin methods
        self._inbox_lock = threading.Lock()
        self._inbox: list[Request] = []
        self._aborts: set[str] = set()

    @classmethod
    def from_model(cls, model: str | None = None, *, device: str = "auto", dtype: str = "auto",
                   cache_config: CacheConfig | None = CacheConfig(), max_batch_size: int = 8,
                   prefill_chunk: int = 512, max_prefill_chunk: int = 2048, max_seq_len: int | None = None,
                   progress: bool = False, quantize: str | None = None) -> Engine:
        source = open_model(model)
        dev = resolve_device(device)
        llama = load_model(source, dtype=resolve_dtype(dtype, dev), device=dev, progress=progress, quantize=quantize)
        return cls(llama, source.tokenizer, model_name=source.name, fingerprint=source.fingerprint,
                   cache_config=cache_config, max_batch_size=max_batch_size, prefill_chunk=prefill_chunk,
                   max_prefill_chunk=max_prefill_chunk, max_seq_len=max_seq_len)

    # -- requests in ---------------------------------------------------------------------------

    def validate(self, request: Request) -> None:
        """Raise EngineInputError for a request that cannot run; cheap, no state touched."""
        request.sampling.validate()
        if not request.prompt_tokens:
            raise EngineInputError("the prompt is empty", "prompt")
        if any(not 0 <= t < self.model.config.vocab_size for t in request.prompt_tokens):
            raise EngineInputError("the prompt contains token ids outside the vocabulary", "prompt")
        n, m = len(request.prompt_tokens), request.sampling.max_tokens
        if n + m > self.context_length:
            raise EngineInputError(
                f"this model's context length is {self.context_length} tokens; the prompt has {n} "
                f"and max_tokens is {m}", "max_tokens" if n < self.context_length else "messages")

    def add_request(self, request: Request) -> None:
        self.validate(request)
        with self._inbox_lock:
            self._inbox.append(request)

    def abort_request(self, request_id: str) -> None:
        with self._inbox_lock:
            self._aborts.add(request_id)

    def has_unfinished(self) -> bool:
        with self._inbox_lock:
            pending = bool(self._inbox)
        return pending or bool(self._by_id) or bool(self._pending_saves)

    def num_waiting(self) -> int:
        with self._inbox_lock:
            return len(self._inbox) + len(self.scheduler)

    def num_running(self) -> int:
        return len(self.running) + len(self.prefilling)

    # -- the loop ------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        outputs: list[RequestOutput] = []
        with self._lock:
            self._take_inbox(outputs)
            self._run_pending_saves()
            self._admit()
            self._prefill_one_chunk(outputs)
            self._decode(outputs)
        return outputs

    def _take_inbox(self, outputs: list[RequestOutput]) -> None:
        with self._inbox_lock:
            requests, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, set()
        for request in requests:
            seq = Sequence(request, IncrementalDetokenizer(self.tokenizer, request.sampling.stop),
                           new_generator(request.sampling))
            self._by_id[request.request_id] = seq
            self.scheduler.add(seq)
        for request_id in aborts:
            seq = self._by_id.get(request_id)
            if seq is not None:
                self._finish(seq, "abort", outputs, save=False)

    def _peek_cached(self, seq: Sequence) -> int:
        return self.prefix.peek(seq.prompt, seq.request.cache) if self.prefix else 0

    def _admit(self) -> None:
        while self._free_slots and len(self.scheduler):
            seq = self.scheduler.pop_next()
            seq.slot = self._free_slots.pop()
            seq.status = Status.PREFILL
            if self.prefix is not None:
                seq.num_cached = self.prefix.load(seq.prompt, seq.request.cache, self.kv, seq.slot)
            seq.num_computed = seq.num_cached
            self.prefilling.append(seq)

    def _prefill_one_chunk(self, outputs: list[RequestOutput]) -> None:
        if not self.prefilling:
            return
        seq = self.prefilling[0]
        start = seq.num_computed
        end = start + self._chunk_size(seq)
        tokens = torch.tensor(seq.prompt[start:end], device=self.model.device)
        logits = self.model.prefill(tokens, start, seq.slot, self.kv, want_logits=end == seq.num_prompt)
        seq.num_computed = end
        if logits is None:
            return
        self.prefilling.popleft()
        if self.prefix is not None and seq.request.cache.enabled:
            n_blocks = seq.num_prompt // self.prefix.block_size
            roles = block_roles(seq.request.token_roles, n_blocks, self.prefix.block_size)
            self._pending_saves.append((seq, seq.prompt, roles, False))
        seq.status = Status.RUNNING
        self.running.append(seq)
        token = sample(logits[None], [seq.request.sampling], [seq.generator])[0]
        self._append_token(seq, token, outputs)

    def _run_pending_saves(self) -> None:
        pending, self._pending_saves = self._pending_saves, []
        for seq, tokens, roles, free_slot in pending:
            self.prefix.save(tokens, seq.request.cache, self.kv, seq.slot, roles)
            if free_slot:
                self._free_slot(seq)

    def _free_slot(self, seq: Sequence) -> None:
        self._free_slots.append(seq.slot)
        seq.slot = None

    def _chunk_size(self, seq: Sequence) -> int:
        """Tokens to prefill now: small chunks while other streams wait on this step, large ones
        when nothing does; never leave a tail shorter than MIN_ROWS (another matmul kernel)."""
        size = self.prefill_chunk if self.running else self.max_prefill_chunk
        remaining = seq.num_prompt - seq.num_computed
        return remaining if remaining - size < MIN_ROWS else size

    def _decode(self, outputs: list[RequestOutput]) -> None:
        # Sequences that got their first token from prefill in this step wait for the next one,
        # so every sequence advances by exactly one token per step.
        batch = [s for s in self.running if s.status is Status.RUNNING and len(s.output_ids) and not s.fresh]
        for s in self.running:
            s.fresh = False
        if not batch:
            return
        tokens = torch.tensor([s.output_ids[-1] for s in batch], device=self.model.device)
        positions = [s.length - 1 for s in batch]
        logits = self.model.decode(tokens, positions, [s.slot for s in batch], self.kv)
        chosen = sample(logits, [s.request.sampling for s in batch], [s.generator for s in batch])
        for seq, token in zip(batch, chosen):
            self._append_token(seq, token, outputs)

    # -- postprocess ---------------------------------------------------------------------------

    def _append_token(self, seq: Sequence, token: int, outputs: list[RequestOutput]) -> None:
        seq.output_ids.append(token)
        seq.fresh = len(seq.output_ids) == 1
        params = seq.request.sampling
        if token in self.tokenizer.eos_token_ids and not params.ignore_eos:
            self._finish(seq, "stop", outputs, last_token=token, emit_token=False)
            return
        text = seq.detokenizer.push(token)
        if seq.detokenizer.stopped:
            self._finish(seq, "stop", outputs, text=text, last_token=token)
        elif len(seq.output_ids) >= params.max_tokens or seq.length >= self.context_length:
            self._finish(seq, "length", outputs, text=text + seq.detokenizer.flush(), last_token=token)
        else:
            outputs.append(self._output(seq, text, [token]))

    def _finish(self, seq: Sequence, reason: str, outputs: list[RequestOutput], *, text: str = "",
                last_token: int | None = None, emit_token: bool = True, save: bool = True) -> None:
        if reason == "stop" and not seq.detokenizer.stopped:
            text += seq.detokenizer.flush()
        seq.finish_reason = reason
        if seq.status is Status.WAITING:
            self.scheduler.remove(seq)
        elif seq.status is Status.PREFILL:
            self.prefilling.remove(seq)
        elif seq.status is Status.RUNNING:
            self.running.remove(seq)
        slot_kept = self._queue_final_save(seq, save) if seq.slot is not None else False
        if seq.slot is not None and not slot_kept:
            self._free_slot(seq)
        seq.status = Status.FINISHED
        del self._by_id[seq.request_id]
        new_ids = [last_token] if (last_token is not None and emit_token) else []
        outputs.append(self._output(seq, text, new_ids))

    def _queue_final_save(self, seq: Sequence, save: bool) -> bool:
        """Queue what a finishing sequence leaves to the cache; True if its slot must be kept
        until that save has run. A reply's save covers its prompt's."""
        prompt_save = next((p for p in self._pending_saves if p[0] is seq), None)
        if prompt_save is not None:
            self._pending_saves.remove(prompt_save)
        if save and self.prefix is not None and seq.request.cache.enabled and seq.request.cache.cache_reply \
                and seq.output_ids:
            # KV exists for every token but the last sampled one (never fed to the model).
            tokens = seq.all_ids[: seq.length - 1]
            bs = self.prefix.block_size
            roles = block_roles(seq.request.token_roles, seq.num_prompt // bs, bs)
            roles += ["assistant"] * (len(tokens) // bs - len(roles))
            self._pending_saves.append((seq, tokens, roles, True))
            return True
        if prompt_save is not None:
            self._pending_saves.append((*prompt_save[:3], True))
            return True
        return False

    def _output(self, seq: Sequence, text: str, new_ids: list[int]) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id, new_text=text, new_token_ids=new_ids,
            finished=seq.status is Status.FINISHED, finish_reason=seq.finish_reason,
            num_prompt_tokens=seq.num_prompt, num_cached_tokens=seq.num_cached,
            num_generated_tokens=len(seq.output_ids))

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

    def cache_stats(self) -> dict:
        with self._lock:
            self._run_pending_saves()  # admin sees every finished request's blocks
            if self.prefix is None:
                return {"enabled": False}
            cache = self.prefix.cache
            stats = cache.stats.as_dict()
            stats.update(enabled=True, block_size=self.prefix.block_size, block_nbytes=self.prefix.pool.block_nbytes,
                         max_bytes=self.prefix.pool.num_blocks * self.prefix.pool.block_nbytes)
            return stats

    def flush_cache(self, tenant: str | None = None) -> int:
        with self._lock:
            self._run_pending_saves()  # admin sees every finished request's blocks
            return self.prefix.cache.flush(tenant) if self.prefix else 0

    def pin_prefix(self, tokens: list[int], tenant: str, salt: str | None = None) -> int:
        return self._pinning(tokens, tenant, salt, pin=True)

    def unpin_prefix(self, tokens: list[int], tenant: str, salt: str | None = None) -> int:
        return self._pinning(tokens, tenant, salt, pin=False)

    def _pinning(self, tokens: list[int], tenant: str, salt: str | None, *, pin: bool) -> int:
        with self._lock:
            self._run_pending_saves()  # admin sees every finished request's blocks
            if self.prefix is None:
                return 0
            namespace = self.prefix.namespace(CacheOptions(tenant=tenant, salt=salt))
            cache = self.prefix.cache
            return cache.pin(tokens, namespace) if pin else cache.unpin(tokens, namespace)
