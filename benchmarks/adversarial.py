"""The hardening issues' findings, replayed against a live server with two tenant keys.

Issue 17: each attack runs while tenant B's greedy request runs beside it; B's reply must equal
the reply it gets alone, and no attack may get a 5xx. Prints, per finding, the status the attack
got, how long the server took to answer it, and whether B's concurrent reply was unchanged.

Issue 25 (tenant A, or no key, attacks; B is the victim): per row, the attack's outcome and
seconds, B's latency alone and with the attack under way, the server's CPU seconds over the row,
and its RSS before and after (and its peak so far). Loopback only; every attack is bounded in
count and time, and the run stops by itself (about 2 minutes after the model loads).

    python benchmarks/adversarial.py              # both sets; starts `promptcache serve` on SmolLM2 (2 slots)
    python benchmarks/adversarial.py --set 25     # only issue 25's rows
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import raw_http  # noqa: E402
from benchmarks.fairness import ADMIN, KEYS  # noqa: E402
from benchmarks.live_server import serve  # noqa: E402

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
SYSTEM = "You are a careful assistant. Answer in one short sentence. " * 30


def chat(user: str, **extra) -> dict:
    return {"model": "SmolLM2-135M-Instruct", "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], **extra}


def big_body(size: int):
    chunk = b"x" * 2**20
    for _ in range(size // len(chunk)):
        yield chunk


def attacks(client: httpx.Client) -> dict:
    """name -> a callable returning the attack's response."""
    def post(path, body=None, headers=A, **kw):
        return client.post(path, json=body, headers=headers, **kw)

    many = {"model": "SmolLM2-135M-Instruct", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}] * 2000}
    tools = [{"type": "function", "function": {"name": f"f{i}", "description": "d" * 1000, "parameters": {}}}
             for i in range(1750)]

    def pin_until_refused():
        for i in range(64):
            reply = post("/v1/cache/pin", {"messages": [{"role": "system", "content": f"{i} " + SYSTEM * 4}]})
            if reply.status_code != 200:
                return reply
        return reply

    return {
        "1 temperature 1e-40": lambda: post("/v1/chat/completions", chat("Name a planet.", temperature=1e-40)),
        "2 2,000 one-character messages": lambda: post("/v1/chat/completions", many),
        "2 1.75 MB tools list": lambda: post("/v1/chat/completions", chat("Hi.", tools=tools)),
        "3 one tenant pins until refused": pin_until_refused,
        "4 /metrics without a key": lambda: client.get("/metrics"),
        "5 200 MiB body, no key": lambda: client.post(
            "/v1/chat/completions", content=big_body(200 * 2**20),
            headers={"Content-Type": "application/json", "Content-Length": str(200 * 2**20)}),
        "5 200 MiB body, tenant key": lambda: client.post(
            "/v1/chat/completions", content=big_body(200 * 2**20),
            headers={"Content-Type": "application/json", "Content-Length": str(200 * 2**20), **A}),
        "6 text/plain flush": lambda: client.post("/v1/cache/flush", content=b"", headers={
            "Content-Type": "text/plain", "Authorization": f"Bearer {ADMIN}"}),
        "6 foreign Host": lambda: client.get("/v1/models", headers={"Host": "evil.example", **A}),
        "6 foreign Origin": lambda: post("/v1/chat/completions", chat("Hi."), headers={"Origin": "https://evil.example", **A}),
        "7 newline in prompt_cache_key": lambda: post("/v1/chat/completions", chat("Hi.", prompt_cache_key="k\nforged")),
        "7 5 MiB prompt_cache_key": lambda: post("/v1/chat/completions", chat("Hi.", prompt_cache_key="k" * 5 * 2**20)),
    }


def start_server(workdir: Path, device: str):
    """`promptcache serve` on SmolLM2 with 2 slots, two tenant keys, an admin key and its stores
    under `workdir`; the HTTP layer's defaults are the server's own."""
    config = workdir / "adversarial.toml"
    lines = ["max_batch_size = 2", f'admin_key = "{ADMIN}"', f'prompt_store = "{workdir / "prompts.sqlite3"}"',
             f'responses_db = "{workdir / "responses.sqlite3"}"', f'records_db = "{workdir / "records.sqlite3"}"',
             "[api_keys]"] + [f'{key} = {{ tenant = "{tenant}" }}' for key, tenant in KEYS.items()]
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    return serve(["--config", str(config), "--device", device])


def issue17(client: httpx.Client) -> list[dict]:
    alone = client.post("/v1/chat/completions", json=chat("Name a colour."), headers=B).json()
    expected = alone["choices"][0]["message"]["content"]
    rows = []
    with ThreadPoolExecutor(2) as pool:
        for name, attack in attacks(client).items():
            beside = pool.submit(client.post, "/v1/chat/completions", json=chat("Name a colour."), headers=B)
            start = time.perf_counter()
            try:
                status = attack().status_code
            except httpx.HTTPError as exc:  # the server closed a body it refused
                status = type(exc).__name__
            seconds = time.perf_counter() - start
            reply = beside.result()
            same = reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == expected
            rows.append({"finding": name, "status": status, "seconds": round(seconds, 3),
                         "concurrent reply unchanged": same})
    return rows


def issue25_attacks(client: httpx.Client, port: int) -> dict:
    """name -> a callable returning the attack's outcome (a status, or what the server did)."""
    def post(path, body, headers=A):
        response = client.post(path, json=body, headers=headers)
        return f"{response.status_code} {response.json().get('error', {}).get('param') or ''}".strip()

    template = client.post("/v1/prompts", json={"template": "{{a}}" * 26_000}, headers=A).json()["id"]
    rng = random.Random(0)
    ids = [[rng.randrange(100, 40_000) for _ in range(8000)] for _ in range(16)]
    return {
        "registry template of 26,000 {{a}}, a = 1,000 chars": lambda: post("/v1/chat/completions", chat(
            "Hi.", prompt={"id": template, "variables": {"a": "x" * 1000}})),
        "7 MB chat body": lambda: post("/v1/chat/completions", chat("x" * 7_000_000)),
        "7 MB /tokenize": lambda: post("/tokenize", {"prompt": "x" * 7_000_000}),
        "650 KB chat body (under the text bound)": lambda: post("/v1/chat/completions", chat("x " * 325_000)),
        "128 MiB header, no key": lambda: raw_http.huge_header(port, 128 * 2**20),
        "2,000 slowloris connections, no key": lambda: raw_http.slowloris(port, 2000, 13),
        "5,000 half-sent requests, no key": lambda: raw_http.half_sent(port, 5000, 6),
        "1,500 half-sent requests, tenant key": lambda: raw_http.half_sent(port, 1500, 6, key="key-a"),
        "echo + logprobs 20 + prompt_logprobs 20, 16 x 8,000 tokens": lambda: post("/v1/completions", {
            "model": "SmolLM2-135M-Instruct", "prompt": ids, "echo": True, "logprobs": 20, "prompt_logprobs": 20,
            "max_tokens": 0}),
        "Gemini generationConfig.seed = 2**64": lambda: post(
            "/v1beta/models/SmolLM2-135M-Instruct:generateContent",
            {"contents": [{"role": "user", "parts": [{"text": "Hi."}]}], "generationConfig": {"seed": 2**64}}),
        "Responses with 7 MB metadata": lambda: post("/v1/responses", {
            "model": "SmolLM2-135M-Instruct", "input": "Hi.", "metadata": {"k": "x" * 7_000_000}}),
    }


def victim_s(client: httpx.Client) -> float:
    start = time.perf_counter()
    reply = client.post("/v1/chat/completions", json=chat("Name a colour."), headers=B, timeout=300)
    seconds = time.perf_counter() - start
    return round(seconds, 2) if reply.status_code == 200 else f"{reply.status_code} after {seconds:.2f} s"


def issue25(client: httpx.Client, server: psutil.Process, port: int) -> list[dict]:
    def cpu_s() -> float:
        times = server.cpu_times()
        return times.user + times.system

    def peak_mib() -> int:
        status = Path(f"/proc/{server.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) // 1024

    def most_fds(running) -> int:
        """The most file descriptors the server held while `running` ran (sampled)."""
        most = server.num_fds()
        while not running.done():
            most = max(most, server.num_fds())
            time.sleep(0.1)  # sampling interval
        return most

    rows = []
    victim_s(client)  # warm
    with ThreadPoolExecutor(2) as pool:
        for name, attack in issue25_attacks(client, port).items():
            alone = victim_s(client)
            cpu, rss = cpu_s(), server.memory_info().rss // 2**20
            start = time.perf_counter()
            running = pool.submit(attack)
            fds = pool.submit(most_fds, running)
            time.sleep(0.2)  # the attack under way before B asks
            beside = victim_s(client)
            outcome = running.result()
            rows.append({"attack": name, "outcome": outcome, "seconds": round(time.perf_counter() - start, 2),
                         "B alone s": alone, "B under attack s": beside, "server CPU s": round(cpu_s() - cpu, 2),
                         "RSS MiB": f"{rss} -> {server.memory_info().rss // 2**20} (peak {peak_mib()})",
                         "server fds (most)": fds.result()})
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("17", "25", "all"), default="all", help="which issue's findings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp), args.device)
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                result = {}
                if args.set in ("17", "all"):
                    result["issue 17"] = issue17(client)
                if args.set in ("25", "all"):
                    result["issue 25"] = issue25(client, psutil.Process(proc.pid), int(url.rsplit(":", 1)[1]))
        finally:
            proc.terminate()
            proc.wait(30)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, rows in result.items():
        print(f"## {name}\n\n{table(rows)}\n")


if __name__ == "__main__":
    main()
