"""`promptcache analyze LOG`: what prompt caching would save on logged traffic, and how to get more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from promptcache.cli.errors import user_errors
from promptcache.cli.main import app


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} must be numbers separated by commas, e.g. 64,256") from None
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"{name} must all be positive")
    return values


@app.command()
def analyze(
    log: Annotated[Path, typer.Argument(help="JSON lines: chat/completions, messages or responses bodies, or `serve --request-log` records.", exists=True, dir_okay=False)],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="GGUF file or Hugging Face directory whose tokenizer and chat template to use (default: the embedded model).")] = None,
    cache_mb: Annotated[float, typer.Option(help="Cache size of the headline figure, the block-size and replica sweeps (MiB per replica).", min=0)] = 256.0,
    policy: Annotated[str, typer.Option(help="Eviction policy of the headline figure: lru, lfu, tier or ttl.")] = "lru",
    block_size: Annotated[int, typer.Option(help="Tokens per cache block.", min=1)] = 16,
    ttl_s: Annotated[float, typer.Option(help="Time-to-live of the ttl policy, in the log's seconds.", min=0.001)] = 300.0,
    sizes_mb: Annotated[Optional[str], typer.Option(help="Cache sizes of the curves, e.g. 16,64,256 (default: fractions of the log's footprint).")] = None,
    block_sizes: Annotated[str, typer.Option(help="Block sizes to compare.")] = "8,16,32,64",
    replicas: Annotated[str, typer.Option(help="Replica counts to compare.")] = "1,2,4,8",
    dtype: Annotated[str, typer.Option(help="KV dtype that sizes blocks: bfloat16 or float32.")] = "bfloat16",
    prefill_tok_s: Annotated[Optional[float], typer.Option(help="Prefill rate for the time saved (default: SmolLM2-135M on the 2-core CPU of docs/benchmarks.md).", min=0.001)] = None,
    min_computed_tokens: Annotated[Optional[int], typer.Option(help="Prompt tokens the server always computes after a hit (default: 1, the last, as the server does).", min=1)] = None,
    interval_s: Annotated[float, typer.Option(help="Seconds between requests that carry no timestamp.", min=0)] = 1.0,
    quick: Annotated[bool, typer.Option("--quick", help="Only the headline and the LRU curve (no other policies, block sizes or replicas): for very large logs.")] = False,
    jobs: Annotated[Optional[int], typer.Option(help="Worker processes for the replays (default: one per CPU).", min=1)] = None,
    top: Annotated[int, typer.Option(help="Shared prefixes to list.", min=0)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
    html: Annotated[Optional[Path], typer.Option(help="Write a self-contained HTML report with the plots embedded.", dir_okay=False)] = None,
) -> None:
    """Replay LOG through the prefix cache (no model run) over a what-if grid, and lint it."""
    from rich.console import Console

    from promptcache.analyze.pipeline import DEFAULT_PREFILL_TOK_S, analyze as run
    from promptcache.analyze.whatif import Settings
    from promptcache.cache.policies import POLICIES
    from promptcache.model.source import open_model

    err = Console(stderr=True)
    with user_errors():
        if policy not in POLICIES:
            raise ValueError(f"unknown eviction policy {policy!r}; choose from {', '.join(POLICIES)}")
        if dtype not in ("bfloat16", "float32"):
            raise ValueError(f"unknown dtype {dtype!r}: use bfloat16 or float32")
        blocks = () if quick else tuple(int(b) for b in _floats(block_sizes, "--block-sizes"))
        counts = () if quick else tuple(int(n) for n in _floats(replicas, "--replicas"))
        source = open_model(model)
        settings = Settings(cache_mb=cache_mb, policy=policy, block_size=block_size, ttl_s=ttl_s,
                            kv_bytes_per_token=source.config.kv_bytes_per_token(2 if dtype == "bfloat16" else 4),
                            sizes_mb=_floats(sizes_mb, "--sizes-mb"), block_sizes=blocks, replicas=counts,
                            jobs=jobs, min_computed=min_computed_tokens or 1,
                            policies=("lru",) if quick else tuple(POLICIES))
        with err.status("analysing") as status:
            report = run(log, source, settings, prefill_tok_s=prefill_tok_s or DEFAULT_PREFILL_TOK_S, top_n=top,
                         interval_s=interval_s, progress=lambda step: status.update(step))
        if html is not None:
            from promptcache.analyze.html import write_html

            try:
                write_html(report, html)
            except OSError as exc:
                raise ValueError(f"cannot write {html}: {exc.strerror}") from None
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        from promptcache.analyze.table import print_report

        print_report(report)
