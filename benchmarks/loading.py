"""Model-opening benchmark: what `promptcache info` and server start-up pay before any weights load.

    .venv/bin/python benchmarks/loading.py                  # the embedded SmolLM2, as a table
    .venv/bin/python benchmarks/loading.py --model PATH     # any local GGUF file or HF directory
    .venv/bin/python benchmarks/loading.py --json

The tests check why these are cheap (the fingerprint reads a fixed 2 MiB + 64 KiB, opening parses
the header and reads no tensor); this script measures how cheap, against the targets the tests
used to assert: fingerprint 0.2 s, GGUF header 0.5 s, open_model 2 s (medians, warm page cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptcache.model.source import embedded_model_path, open_model, weights_fingerprint  # noqa: E402


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm the page cache: the figures are for a model already on local disk
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(path: Path, repeat: int) -> list[dict]:
    opened = open_model(path)
    if opened.format == "gguf":
        files = [opened.path]
    else:
        from promptcache.model.safetensors_loader import SafetensorsCheckpoint

        files = SafetensorsCheckpoint.open(opened.path).files
    rows = [("fingerprint", lambda: weights_fingerprint(opened.format, files, opened.config), 0.2)]
    if opened.format == "gguf":
        from promptcache.model.gguf_loader import read_gguf

        rows.append(("read GGUF header", lambda: read_gguf(opened.path), 0.5))
    rows.append(("open_model", lambda: open_model(path), 2.0))
    return [{"section": "loading", "name": name, "value": round(median_seconds(fn, repeat), 4), "unit": "s",
             "target": f"< {target} s"} for name, fn, target in rows]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file or HF directory (default: embedded)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args(argv)
    rows = measure(args.model or embedded_model_path(), args.repeat)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        print(f"{'measurement':{width}}  {'value':>8}  unit  target")
        for r in rows:
            print(f"{r['name']:{width}}  {r['value']:>8}  {r['unit']:4}  {r['target']}")
    return rows


if __name__ == "__main__":
    main()
