"""Per-tenant fairness at admission, measured against a live server.

Tenant A queues 8 long generations (ignore_eos, 64 tokens each) on a server with 2 batch slots;
once all of them are in the server, tenant B sends one short request. Without turns B would
wait behind A's whole backlog (about A's last completion); with turns alone, until one of A's
generations ends; with slots shared (one of A's generations paused for B, docs/design.md), B
gets a slot at the next step. The engine-level figures, with preemption on and off, are
benchmarks/slot_fairness.py. Reported: each completion's time since A's first send,
and B's completion time over A's last (target: under 0.5). A's requests past its per-tenant limit
(`max_requests_per_tenant`) are counted as 429s.

    python benchmarks/fairness.py                  # starts `promptcache serve` on SmolLM2
    python benchmarks/fairness.py --url URL --key-a KA --key-b KB --admin-key KADMIN
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.live_server import serve  # noqa: E402

KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}
ADMIN = "key-admin"


def start_server(args, workdir: Path) -> tuple[subprocess.Popen, str]:
    config = workdir / "fairness.toml"
    lines = [f"max_batch_size = {args.slots}", f'admin_key = "{ADMIN}"']
    if args.limit is not None:
        lines.append(f"max_requests_per_tenant = {args.limit}")
    lines.append("[api_keys]")
    lines += [f'{key} = {{ tenant = "{tenant}" }}' for key, tenant in KEYS.items()]
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    return serve(["--config", str(config), "--device", args.device] + (["--model", args.model] if args.model else []))


def in_server(client: httpx.Client, admin_key: str) -> int:
    """Requests the engine holds (waiting + running), from the admin stats."""
    queue = client.get("/v1/cache/stats", headers={"Authorization": f"Bearer {admin_key}"}).json()["queue"]
    return queue["waiting"] + queue["running"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (default: start one with 2 slots and two tenant keys)")
    parser.add_argument("--model", help="model for the started server (default: embedded SmolLM2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--slots", type=int, default=2, help="--max-batch-size of the started server")
    parser.add_argument("--limit", type=int, help="max_requests_per_tenant of the started server (default: its default)")
    parser.add_argument("--key-a", default="key-a")
    parser.add_argument("--key-b", default="key-b")
    parser.add_argument("--admin-key", default=ADMIN)
    parser.add_argument("--a-requests", type=int, default=8)
    parser.add_argument("--a-tokens", type=int, default=64)
    parser.add_argument("--b-tokens", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    proc, url = None, args.url
    workdir = tempfile.TemporaryDirectory()
    if url is None:
        proc, url = start_server(args, Path(workdir.name))
    try:
        report = run(url, args)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        workdir.cleanup()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"model: {report['model']}, slots: {args.slots}, machine: {report['machine']}")
    print(f"tenant A: {report['a_sent']} x {args.a_tokens} tokens, {report['a_refused_429']} refused (429)")
    print(f"  completions (s since A's first send): {', '.join(f'{t:.2f}' for t in report['a_done_s'])}")
    print(f"tenant B: 1 x {args.b_tokens} tokens, sent at {report['b_sent_s']:.2f} s, done at {report['b_done_s']:.2f} s "
          f"(latency {report['b_latency_s']:.2f} s)")
    print(f"B's completion / A's last completion: {report['ratio']:.3f} (target < 0.5)")


def run(url: str, args) -> dict:
    client = httpx.Client(base_url=url, timeout=600)
    model = client.get("/v1/models", headers={"Authorization": f"Bearer {args.key_a}"}).json()["data"][0]["id"]

    def ask(key: str, text: str, max_tokens: int) -> httpx.Response:
        body = {"model": model, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
                "messages": [{"role": "user", "content": text}]}
        return client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})

    for key in (args.key_a, args.key_b):  # first-call costs out of the way
        assert ask(key, "warm up", 2).status_code == 200
    start = time.perf_counter()
    a_done: list[float] = []
    a_status: list[int] = []
    lock = threading.Lock()

    def tenant_a(i: int) -> None:
        response = ask(args.key_a, f"Write a long story about lighthouse number {i}.", args.a_tokens)
        with lock:
            a_status.append(response.status_code)
            if response.status_code == 200:
                a_done.append(time.perf_counter() - start)

    threads = [threading.Thread(target=tenant_a, args=(i,)) for i in range(args.a_requests)]
    for t in threads:
        t.start()
    # B goes in once the server holds all of A's accepted requests (or A's were refused).
    while True:
        with lock:
            refused = sum(s == 429 for s in a_status)
        if in_server(client, args.admin_key) >= args.a_requests - refused:
            break
        time.sleep(0.01)
    b_sent = time.perf_counter() - start
    b = ask(args.key_b, "Name a colour.", args.b_tokens)
    b_done = time.perf_counter() - start
    assert b.status_code == 200, b.text
    for t in threads:
        t.join()
    a_done.sort()
    return {
        "model": model, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                                   f"{__import__('os').cpu_count()} cores",
        "a_sent": args.a_requests, "a_refused_429": sum(s == 429 for s in a_status),
        "a_done_s": a_done, "b_sent_s": b_sent, "b_done_s": b_done, "b_latency_s": b_done - b_sent,
        "ratio": b_done / a_done[-1], "target_met": b_done / a_done[-1] < 0.5,
    }


if __name__ == "__main__":
    main()
