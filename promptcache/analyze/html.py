"""The self-contained HTML report: the tables of the terminal report and the plots as inline
PNGs, no script and no external resource, so it opens anywhere (and from a mail attachment).
Every string from the log (prefix previews, findings) is HTML-escaped."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from promptcache.analyze.plots import PLOTS


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def render_html(report: dict) -> str:
    s = report["settings"]
    mem = report["memory"]
    totals = _table(["figure", "value"], [
        ["requests", f"{report['requests']:,}"],
        ["lines / bad lines / without body / refused",
         f"{report['lines']:,} / {report['bad_lines']:,} / {report['without_body']:,} / {report['refused']:,}"],
        ["prompt tokens", f"{report['prompt_tokens']:,}"],
        [f"served from cache ({s['policy']}, {s['cache_mb']:g} MiB, block {s['block_size']})",
         f"{report['hit_tokens']:,} ({_pct(report['hit_ratio'])})"],
        [f"prefill time saved at {s['prefill_tok_s']:,.0f} tokens/s",
         f"{report['prefill_s_saved']:,.1f} s of {report['prefill_s_total']:,.1f} s"],
        ["memory to hold the whole log", f"{mem['footprint_mb']:,.1f} MiB"],
        ["memory for 95% of the best LRU hit ratio",
         "-" if mem["mb_for_95pct_of_best_lru"] is None else f"{mem['mb_for_95pct_of_best_lru']:,.1f} MiB"],
    ])
    policies = list(report["curves"])
    first = next(iter(report["curves"].values()), [])
    curves = _table(["cache MiB", *policies], [
        [f"{p['cache_mb']:,.1f}", *(_pct(report["curves"][name][i]["hit_ratio"]) for name in policies)]
        for i, p in enumerate(first)])
    blocks = _table(["block size", "hit ratio"], [[r["block_size"], _pct(r["hit_ratio"])] for r in report["block_sizes"]])
    replicas = _table(["replicas", "routing", "hit ratio", "busiest replica's share"],
                      [[r["replicas"], r["routing"], _pct(r["hit_ratio"]), _pct(r["busiest_share"])] for r in report["replicas"]])
    top = _table(["tokens", "requests", "log line", "prefix"],
                 [[f"{p['tokens']:,}", f"{p['requests']:,}", p["example_line"], p["preview"]] for p in report["top_prefixes"]])
    lint = _table(["finding", "where", "requests", "log line"],
                  [[f["message"], f["position"], f"{f['affected']:,}", f["example_line"]] for f in report["lint"]]) \
        if report["lint"] else "<p>No prefix-stability problems found.</p>"
    bad = "".join(f"<li>line {b['line']}: {escape(b['reason'])}</li>" for b in report["bad_examples"])
    shown = {"curves": True, "block-sizes": bool(report["block_sizes"]), "replicas": bool(report["replicas"])}
    images = {name: base64.b64encode(draw(report)).decode("ascii") for name, draw in PLOTS.items() if shown[name]}

    def img(name: str, alt: str) -> str:
        if name not in images:
            return "<p>Not computed (--quick).</p>"
        return f'<img id="plot-{name}" class="plot" alt="{escape(alt)}" src="data:image/png;base64,{images[name]}">'

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>promptcache analyze: {escape(report['log'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
img.plot {{ display: block; margin: 0.5em 0 1.5em; max-width: 100%; }}
.row {{ display: flex; gap: 2em; flex-wrap: wrap; }}
</style></head><body>
<h1>What prompt caching would save</h1>
<p>{escape(report['log'])}: {report['requests']:,} requests rendered with {escape(report['model'])}'s tokenizer and chat
template, replayed through promptcache's prefix cache (no model run).</p>
{totals}
{f"<p>Bad lines, first few:</p><ul>{bad}</ul>" if bad else ""}
<h2>Cache size and eviction policy</h2>
{img("curves", "token hit ratio by cache size, one line per eviction policy")}
{curves}
<div class="row"><div><h2>Block size</h2>{img("block-sizes", "hit ratio by block size")}{blocks}</div>
<div><h2>Replicas</h2>{img("replicas", "hit ratio by replica count, random and prefix-aware routing")}{replicas}</div></div>
<h2>Top shared prefixes{" (count-min sketch estimates)" if report["top_prefixes_sketched"] else ""}</h2>
{top}
<h2>Prefix stability</h2>
{lint}
</body></html>
"""


def write_html(report: dict, path: Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")
