"""What a sampled token does to its sequence: an output delta, or the end of the sequence.

A part of `Engine` (a mixin), kept apart from the step loop in engine.py because every way a
sequence ends (EOS, stop string, complete structure, length, abort, error) must leave the same
books: it leaves the scheduler, its slot is freed or handed to its final save, its pin
reservation is settled, and exactly one finished `RequestOutput` says why. It uses the Engine's
`tokenizer`, `context_length`, `scheduler`, `saves`, `_by_id`, and the saves of
cache_traffic.py; it runs under the Engine's lock, inside `step()`.
"""

from __future__ import annotations

from promptcache.engine.api import RequestOutput
from promptcache.engine.logprobs import as_token_logprob, prompt_logprobs
from promptcache.engine.save_queue import SaveQueue
from promptcache.engine.scheduler import Scheduler
from promptcache.engine.sequence import Sequence, Status
from promptcache.model.tokenizer import Tokenizer


class Outcomes:
    # Set by Engine.__init__; read here. `_queue_final_save` and `_settle_pin`: CacheTraffic.
    tokenizer: Tokenizer
    context_length: int
    scheduler: Scheduler
    saves: SaveQueue
    _by_id: dict[str, Sequence]

    def _append_token(self, seq: Sequence, token: int, outputs: list[RequestOutput]) -> None:
        """Append a sampled token to seq, then emit its text, or finish seq if the token ends it."""
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
        """Finish seq with finish_reason "error" and `message` (safe to show); once only."""
        if seq.status is Status.FINISHED:
            return
        seq.error = message
        self._finish(seq, "error", outputs, save=save)

    def _finish(self, seq: Sequence, reason: str, outputs: list[RequestOutput], *, text: str = "",
                last_token: int | None = None, emit_token: bool = True, save: bool = True) -> None:
        """End seq for `reason`. save=False (an abort, a failed model run): nothing of seq is
        saved, and its slot is freed now."""
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

    def _output(self, seq: Sequence, text: str, new_ids: list[int]) -> RequestOutput:
        """seq's news of this step; the prompt's logprobs go with its first generated token."""
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
