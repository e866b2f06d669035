"""Summaries of a bench run: per-endpoint figures, the table, the JSON document, the ratios.

The JSON (`--out`) is the contract other tools read:

    {"workload", "seed", "sizes", "concurrency", "max_tokens", "endpoints": [{label, base_url, model}],
     "summary": {label: Summary fields}, "ratios": {...} (with --compare), "requests": [Row fields]}
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rich.table import Table

from promptcache.bench.runner import Row


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    prompt_tokens: int
    cached_tokens: int | None  # None when the server reported none
    cached_share: float | None
    completion_tokens: int
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_mean_s: float | None
    itl_p50_s: float | None
    total_p50_s: float | None
    wall_s: float
    output_tokens_per_s: float | None


def summarize(rows: Sequence[Row]) -> Summary:
    ok = [r for r in rows if r.error is None]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    reported = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    cached = sum(reported) if reported else None
    completion = sum(r.completion_tokens or 0 for r in ok)
    wall = max((r.start_s + r.total_s for r in rows), default=0.0) - min((r.start_s for r in rows), default=0.0)
    return Summary(
        requests=len(rows), errors=len(rows) - len(ok), prompt_tokens=prompt, cached_tokens=cached,
        cached_share=cached / prompt if cached is not None and prompt else None,
        completion_tokens=completion,
        ttft_p50_s=percentile(ttft, 50), ttft_p90_s=percentile(ttft, 90),
        ttft_mean_s=statistics.fmean(ttft) if ttft else None,
        itl_p50_s=percentile([r.itl_s for r in ok if r.itl_s is not None], 50),
        total_p50_s=percentile([r.total_s for r in ok], 50),
        wall_s=wall, output_tokens_per_s=completion / wall if wall > 0 else None,
    )


RATIO_FIELDS = ("ttft_p50_s", "ttft_p90_s", "ttft_mean_s", "itl_p50_s", "total_p50_s")


def ratios(first: Summary, second: Summary) -> dict[str, float | None]:
    """second / first for each latency figure: above 1 means the second endpoint is slower."""
    out: dict[str, float | None] = {}
    for name in RATIO_FIELDS:
        a, b = getattr(first, name), getattr(second, name)
        out[name] = b / a if a and b is not None else None
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def table(summaries: dict[str, Summary], ratio: dict[str, float | None] | None = None) -> Table:
    out = Table(title="promptcache bench")
    out.add_column("figure")
    for label in summaries:
        out.add_column(label, justify="right")
    if ratio is not None:
        out.add_column("ratio (2nd/1st)", justify="right")
    lines = [
        ("requests (errors)", lambda s: f"{s.requests} ({s.errors})", None),
        ("prompt tokens", lambda s: f"{s.prompt_tokens:,}", None),
        ("cached tokens", lambda s: "not reported" if s.cached_tokens is None else f"{s.cached_tokens:,} ({s.cached_share or 0:.0%})", None),
        ("TTFT p50 ms", lambda s: _ms(s.ttft_p50_s), "ttft_p50_s"),
        ("TTFT p90 ms", lambda s: _ms(s.ttft_p90_s), "ttft_p90_s"),
        ("TTFT mean ms", lambda s: _ms(s.ttft_mean_s), "ttft_mean_s"),
        ("inter-token p50 ms", lambda s: _ms(s.itl_p50_s), "itl_p50_s"),
        ("total p50 ms", lambda s: _ms(s.total_p50_s), "total_p50_s"),
        ("output tokens/s", lambda s: "-" if s.output_tokens_per_s is None else f"{s.output_tokens_per_s:,.1f}", None),
    ]
    for name, show, key in lines:
        cells = [show(s) for s in summaries.values()]
        if ratio is not None:
            value = ratio.get(key) if key else None
            cells.append("" if value is None else f"{value:.2f}x")
        out.add_row(name, *cells)
    return out


def document(meta: dict, summaries: dict[str, Summary], rows: Sequence[Row],
             ratio: dict[str, float | None] | None) -> dict:
    doc = {**meta, "summary": {label: asdict(s) for label, s in summaries.items()}}
    if ratio is not None:
        doc["ratios"] = ratio
    doc["requests"] = [r.as_dict() for r in rows]
    return doc
