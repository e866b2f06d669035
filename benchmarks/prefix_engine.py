"""Engine sections of the prefix benchmark: time-to-first-token, warm over cold, and the cost
of a miss. Kept apart from benchmarks/prefix.py so that the cache-only sections import no torch.

Warm: a 2,048-token prompt whose first 1,984 tokens an earlier request already computed (its
KV is in the prefix cache). Cold: the same prompt in a fresh namespace. Miss overhead: cold with
the cache enabled (lookup, then saving 128 new blocks) over cold on an engine with no cache.
All three are measured in one run on one model object, and each is the best of `--repeat`.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.shapes import SHAPES, random_state_dict
from promptcache.cache.config import CacheConfig
from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.engine.engine import Engine
from promptcache.engine.loading import DTYPES, load_model, resolve_device
from promptcache.model.llama import LlamaModel
from promptcache.model.source import open_model


class _NullTokenizer:
    """Random-weight shapes have no vocabulary file; time-to-first-token never decodes text
    beyond one token, so a tokenizer that decodes to nothing changes no timing."""

    eos_token_ids: tuple[int, ...] = ()

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return ""


def _engines(args) -> tuple[Engine, Engine]:
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    if args.shape == "smollm2":
        source = open_model(None)
        model, tokenizer, fingerprint = load_model(source, dtype=dtype, device=device), source.tokenizer, source.fingerprint
    else:
        config = SHAPES[args.shape]
        model = LlamaModel(config, random_state_dict(config, dtype, device), dtype=dtype, device=device)
        tokenizer, fingerprint = _NullTokenizer(), f"random-{args.shape}"
    common = dict(model_name=args.shape, fingerprint=fingerprint, max_batch_size=2, prefill_chunk=args.chunk,
                  max_seq_len=4096)
    cache = CacheConfig(max_bytes=args.cache_mb * 2**20)
    return Engine(model, tokenizer, cache_config=cache, **common), Engine(model, tokenizer, cache_config=None, **common)


def time_to_first_token(engine: Engine, prompt: list[int], salt: str) -> tuple[float, int]:
    request_id = f"ttft-{time.monotonic_ns()}"
    params = SamplingParams(max_tokens=1, ignore_eos=True)
    if engine.model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    engine.add_request(Request(request_id, prompt, params, CacheOptions(salt=salt)))
    while True:
        for out in engine.step():
            if out.request_id == request_id:
                while engine.has_unfinished():
                    engine.step()
                return time.perf_counter() - start, out.num_cached_tokens


def section_ttft(args) -> list[dict]:
    from benchmarks.prefix import row

    cached, uncached = _engines(args)
    vocab = cached.model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, vocab, (args.prompt,), generator=gen).tolist()
    shared = args.shared
    other_tail = torch.randint(3, vocab, (args.prompt - shared,), generator=gen).tolist()
    time_to_first_token(cached, prompt[:256], "warmup")  # first-call allocations
    cold_on, cold_off, warm, reused = [], [], [], 0
    for i in range(args.repeat_engine):
        cold_on.append(time_to_first_token(cached, prompt, f"cold-{i}")[0])
        cold_off.append(time_to_first_token(uncached, prompt, f"cold-{i}")[0])
        time_to_first_token(cached, prompt[:shared] + other_tail, f"warm-{i}")  # computes the shared prefix
        seconds, reused = time_to_first_token(cached, prompt, f"warm-{i}")
        warm.append(seconds)
    tag = f"{args.shape} {args.dtype} {args.device}"
    return [
        row("ttft", f"cold TTFT, {args.prompt} tokens ({tag})", min(cold_on) * 1e3, "ms"),
        row("ttft", f"warm TTFT, {reused} of {args.prompt} cached", min(warm) * 1e3, "ms"),
        row("ttft", "warm / cold", min(warm) / min(cold_on), "ratio", "<= 0.04 (CPU)"),
        row("ttft", "cold, cache on / cache off (miss overhead)", min(cold_on) / min(cold_off), "ratio", "<= 1.03"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="smollm2", choices=["smollm2", *SHAPES])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--prompt", type=int, default=2048, help="prompt tokens")
    parser.add_argument("--shared", type=int, default=1984, help="prompt tokens cached before the warm request")
    parser.add_argument("--chunk", type=int, default=512, help="engine prefill chunk")
    parser.add_argument("--cache-mb", type=int, default=2048)
    parser.add_argument("--repeat-engine", type=int, default=3, help="repeats of each time-to-first-token")
