"""One analysis from log to report: read, render, replay the grid, top prefixes, lint.

The result is a plain dict (the `--json` document); the table and the HTML report are both
drawn from it, so the three never disagree. Its top level holds `hit_ratio` (by tokens, at the
chosen settings) and `bad_lines`, with every sweep under its own key.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from promptcache.analyze.lint import lint
from promptcache.analyze.logs import read_log
from promptcache.analyze.render import render_all
from promptcache.analyze.whatif import MIB, Settings, Traffic, memory_for, run_grid
from promptcache.cache.prefix_sharing import top_shared_prefixes

EXACT_SHARING_LIMIT = 20_000  # requests; past it the top prefixes are counted with a sketch
SKETCH_WIDTH = 1 << 20
# SmolLM2-135M-Instruct, bfloat16, cold 512-token prefill on the 2-core CPU of docs/benchmarks.md.
DEFAULT_PREFILL_TOK_S = 725.3


def _result(r) -> dict:
    return {"hit_ratio": r.hit_ratio, "hit_tokens": r.hit_tokens, "prompt_tokens": r.prompt_tokens,
            "peak_blocks": r.peak_blocks}


def _reasoning_in(prompt) -> bool:
    return any(m.role == "assistant" and (m.reasoning or "<think>" in m.content) for m in prompt.messages)


def analyze(path: Path, source, settings: Settings, *, prefill_tok_s: float = DEFAULT_PREFILL_TOK_S,
            top_n: int = 10, interval_s: float = 1.0, progress: Callable[[str], None] = lambda step: None) -> dict:
    """The report for the log at `path`; `source` is the model (`open_model`), weights unread."""
    from promptcache.engine.prefix_reuse import block_roles

    started = time.perf_counter()
    progress("reading the log")
    log = read_log(path, interval_s)
    tokens, roles, at, tenants, lines = [], [], [], [], []
    texts: dict[int, str] = {}
    progress(f"rendering {len(log.requests):,} requests")
    jobs = settings.jobs or os.cpu_count() or 1
    for request, out in zip(log.requests, render_all([r.prompt for r in log.requests], source.tokenizer, jobs)):
        if isinstance(out, str):
            log.bad(request.line, out[:200])
            continue
        if not out.tokens:
            log.bad(request.line, "an empty prompt")
            continue
        tokens.append(out.tokens if isinstance(out.tokens, array) else array("I", out.tokens))  # 1/4 of a list's memory
        roles.append(out.roles)
        at.append(request.at)
        tenants.append(request.tenant)
        lines.append(request.line)
        if out.text is not None and _reasoning_in(request.prompt):
            texts[request.line] = out.text
    rendered_s = time.perf_counter() - started
    traffic = Traffic(tokens, roles, at, tenants, source.fingerprint)
    grid = run_grid(traffic, settings, block_roles, progress)
    grid_s = time.perf_counter() - started - rendered_s
    progress("top shared prefixes")
    bs = settings.block_size
    sketch = len(tokens) > EXACT_SHARING_LIMIT
    top = top_shared_prefixes((item.keys for item in grid.items), top_n, SKETCH_WIDTH if sketch else None)
    progress("lint")
    by_line = {r.line: r.prompt for r in log.requests}
    findings = lint([(line, by_line[line]) for line in lines], texts)
    head = grid.headline
    block_nbytes = settings.kv_bytes_per_token * bs
    lru = grid.curves.get("lru") or next(iter(grid.curves.values()), [])
    return {
        "log": str(path),
        "model": source.name,
        "lines": log.lines,
        "requests": len(tokens),
        "bad_lines": log.bad_lines,
        "bad_examples": [{"line": n, "reason": why} for n, why in log.bad_examples],
        "without_body": log.without_body,
        "refused": log.refused,
        "tenants": len(set(tenants)),
        "prompt_tokens": head.prompt_tokens,
        "hit_tokens": head.hit_tokens,
        "hit_ratio": head.hit_ratio,
        "settings": {**asdict(settings), "prefill_tok_s": prefill_tok_s, "block_nbytes": block_nbytes},
        "prefill_s_total": head.prompt_tokens / prefill_tok_s,
        "prefill_s_saved": head.hit_tokens / prefill_tok_s,
        "memory": {
            "footprint_mb": grid.footprint_bytes / MIB,
            "peak_mb_at_settings": head.peak_blocks * block_nbytes / MIB,
            "mb_for_95pct_of_best_lru": memory_for(lru, 0.95),
        },
        "curves": {p: [{"cache_mb": mb, **_result(r)} for mb, r in points] for p, points in grid.curves.items()},
        "block_sizes": [{"block_size": b, **_result(r)} for b, r in grid.block_sizes],
        "replicas": [{"replicas": n, "routing": routing, **_result(r),
                      "busiest_share": max(r.replica_requests) / max(1, r.requests)} for n, routing, r in grid.replicas],
        "top_prefixes": [{"tokens": p.num_tokens, "requests": p.num_prompts, "example_line": lines[p.example],
                          "preview": _preview(source.tokenizer, list(tokens[p.example][:p.num_tokens]))} for p in top],
        "top_prefixes_sketched": sketch,
        "lint": [f.as_dict() for f in findings],
        "seconds": {"render": rendered_s, "grid": grid_s, "total": time.perf_counter() - started},
    }


def _preview(tokenizer, tokens: list[int], edge: int = 60) -> str:
    text = tokenizer.decode(tokens)
    return text if len(text) <= 2 * edge + 5 else f"{text[:edge]} ... {text[-edge:]}"
