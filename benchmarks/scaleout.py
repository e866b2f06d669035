"""One replica against three behind each router: token hit ratio and time-to-first-token.

    .venv/bin/python benchmarks/scaleout.py                       # SmolLM2, chat and shared-system
    .venv/bin/python benchmarks/scaleout.py --model DIR --quick   # a smaller run
    .venv/bin/python benchmarks/scaleout.py --json > out.json

"1 replica" is the single server (`promptcache serve`); "3 x ROUTER" is `serve --replicas 3`:
three engine replicas as a Ray Serve application on a local Ray, behind the ingress and the
router in ROUTER mode (the router's mode is switched between runs; the application is started
once). Both are served in this process on loopback ports and driven over HTTP by the official
openai client (`promptcache/bench`), streaming, conversations interleaved with
`--concurrency` requests in flight. Every run uses its own seed, so no run reads another's
cache.

On a machine with few cores the replicas share them, so TTFT says more about that sharing than
about routing: the token hit ratio (prompt tokens read from a cache / prompt tokens) is the
primary figure there. "later" is the hit ratio of turns after a conversation's first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai  # noqa: E402
import uvicorn  # noqa: E402

from promptcache.bench.runner import Endpoint, Runner  # noqa: E402
from promptcache.bench.workloads import Sizes, build  # noqa: E402
from promptcache.scaleout.launch import ScaleOut, deploy, ingress_app, shutdown, start_ray  # noqa: E402
from promptcache.server.app import create_app, engine_from_settings  # noqa: E402
from promptcache.server.settings import ServerSettings  # noqa: E402

ROUTERS = ("prefix", "round-robin", "least-loaded")


def serve_in_thread(app) -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("a server did not start")
        time.sleep(0.05)  # polling a starting server, not a measurement
    return f"http://127.0.0.1:{port}/v1"


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def run(base_url: str, model: str, workload: str, sizes: Sizes, seed: int, concurrency: int, max_tokens: int) -> dict:
    async def go():
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
        try:
            return await Runner([Endpoint("x", client, model)], concurrency, max_tokens).run(
                build(workload, sizes, seed=seed))
        finally:
            await client.close()

    rows = asyncio.run(go())
    ok = [r for r in rows if r.error is None]
    later = [r for r in ok if r.turn >= 1]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]

    def ratio(rs):
        prompt = sum(r.prompt_tokens or 0 for r in rs)
        return sum(r.cached_tokens or 0 for r in rs) / prompt if prompt else None

    return dict(requests=len(rows), errors=len(rows) - len(ok), hit_ratio=ratio(ok), later_hit_ratio=ratio(later),
                ttft_mean_s=statistics.fmean(ttfts) if ttfts else None, ttft_p90_s=p90(ttfts) if ttfts else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter conversations")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = ServerSettings(model=args.model, log_level="warning")
    chat = Sizes(conversations=4 if args.quick else 8, turns=3, shared_tokens=128, turn_tokens=96)
    system = Sizes(conversations=8 if args.quick else 16, turns=1, shared_tokens=512, turn_tokens=32)
    workloads = {"chat": chat, "shared-system": system}

    started = time.perf_counter()
    single_url = serve_in_thread(create_app(engine_from_settings(settings), settings))
    cfg = ScaleOut(replicas=args.replicas)
    start_ray(cfg)
    results: list[dict] = []
    try:
        handle = deploy(settings, cfg)
        app = ingress_app(settings, cfg, handle)
        cluster_url = serve_in_thread(app)
        book = app.state.router_book
        model = openai.OpenAI(base_url=single_url, api_key="unused").models.list().data[0].id
        setup_s = time.perf_counter() - started
        seed = 100
        for name, sizes in workloads.items():
            for setup, url, mode in [("1 replica", single_url, None)] + [
                    (f"{args.replicas} x {m}", cluster_url, m) for m in ROUTERS]:
                if mode is not None:
                    book.mode = mode
                seed += 1
                row = run(url, model, name, sizes, seed, args.concurrency, args.max_tokens)
                results.append(dict(workload=name, setup=setup, **row))
                if not args.json:
                    later = "-" if row["later_hit_ratio"] is None else f"{row['later_hit_ratio']:.3f}"
                    print(f"{name:14} {setup:18} hit {row['hit_ratio']:.3f}  later {later:5}  "
                          f"TTFT mean {row['ttft_mean_s']:.3f} s  p90 {row['ttft_p90_s']:.3f} s  "
                          f"errors {row['errors']}", flush=True)
        snapshot = book.snapshot()
    finally:
        shutdown(cfg)
    summary = dict(setup_s=round(setup_s, 1), results=results,
                   router_predicted_tokens=sum(r["predicted_tokens"] for r in snapshot.values()),
                   router_actual_tokens=sum(r["actual_tokens"] for r in snapshot.values()),
                   router_disagreements=sum(r["disagreements"] for r in snapshot.values()))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"router: predicted {summary['router_predicted_tokens']} cached tokens, replicas reported "
              f"{summary['router_actual_tokens']}, {summary['router_disagreements']} requests differed")


if __name__ == "__main__":
    main()
