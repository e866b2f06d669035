"""The terminal report: totals, the what-if sweeps, top prefixes and lint, as rich tables."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def render(report: dict) -> Group:
    s = report["settings"]
    totals = Table(title=f"{report['log']}: {report['requests']:,} requests, {report['model']}", show_header=False)
    for name, value in [
        ("lines / bad lines / without body / refused",
         f"{report['lines']:,} / {report['bad_lines']:,} / {report['without_body']:,} / {report['refused']:,}"),
        ("prompt tokens", f"{report['prompt_tokens']:,}"),
        (f"served from cache ({s['policy']}, {_mb(s['cache_mb'])} MiB, block {s['block_size']})",
         f"{report['hit_tokens']:,} ({_pct(report['hit_ratio'])})"),
        (f"prefill time saved at {s['prefill_tok_s']:,.0f} tok/s", f"{report['prefill_s_saved']:,.1f} s of {report['prefill_s_total']:,.1f} s"),
        ("memory: whole log / peak at settings", f"{_mb(report['memory']['footprint_mb'])} / {_mb(report['memory']['peak_mb_at_settings'])} MiB"),
        ("memory for 95% of the best LRU hit ratio", f"{_mb(report['memory']['mb_for_95pct_of_best_lru'])} MiB"),
    ]:
        totals.add_row(name, value)
    curves = Table(title="token hit ratio by cache size and policy")
    curves.add_column("cache MiB", justify="right")
    policies = list(report["curves"])
    for policy in policies:
        curves.add_column(policy, justify="right")
    for i, point in enumerate(next(iter(report["curves"].values()), [])):
        curves.add_row(_mb(point["cache_mb"]), *(_pct(report["curves"][p][i]["hit_ratio"]) for p in policies))
    blocks = Table(title=f"block size ({_mb(s['cache_mb'])} MiB, {s['policy']})")
    blocks.add_column("block size", justify="right")
    blocks.add_column("hit ratio", justify="right")
    for row in report["block_sizes"]:
        blocks.add_row(str(row["block_size"]), _pct(row["hit_ratio"]))
    replicas = Table(title=f"replicas ({_mb(s['cache_mb'])} MiB each)")
    for name in ("replicas", "routing", "hit ratio", "busiest replica's share"):
        replicas.add_column(name, justify="right")
    for row in report["replicas"]:
        replicas.add_row(str(row["replicas"]), row["routing"], _pct(row["hit_ratio"]), _pct(row["busiest_share"]))
    top = Table(title="top shared prefixes" + (" (count-min sketch estimates)" if report["top_prefixes_sketched"] else ""))
    for name in ("tokens", "requests", "line", "prefix"):
        top.add_column(name)
    for row in report["top_prefixes"]:
        top.add_row(f"{row['tokens']:,}", f"{row['requests']:,}", str(row["example_line"]), Text(row["preview"]))
    parts = [totals, curves, blocks, replicas, top]
    if report["lint"]:
        findings = Table(title="prefix stability")
        for name in ("finding", "where", "requests", "line"):
            findings.add_column(name)
        for f in report["lint"]:
            findings.add_row(Text(f["message"]), Text(f["position"]), f"{f['affected']:,}", str(f["example_line"]))
        parts.append(findings)
    return Group(*parts)


def print_report(report: dict, console: Console | None = None) -> None:
    (console or Console()).print(render(report))
