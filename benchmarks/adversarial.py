"""The hardening issue's findings, replayed against a live server with two tenant keys.

Each attack runs while tenant B's greedy request runs beside it; B's reply must equal the reply it
gets alone, and no attack may get a 5xx. Prints, per finding, the status the attack got, how long
the server took to answer it, and whether B's concurrent reply was unchanged.

    python benchmarks/adversarial.py        # starts `promptcache serve` on SmolLM2 (2 slots)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.fairness import ADMIN, start_server  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server_args = argparse.Namespace(slots=2, limit=None, device="cpu", model=None)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(server_args, Path(tmp))
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
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
        finally:
            proc.terminate()
            proc.wait(30)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| finding | status | seconds | concurrent reply unchanged |\n| --- | --- | ---: | --- |")
    for row in rows:
        print(f"| {row['finding']} | {row['status']} | {row['seconds']} | {row['concurrent reply unchanged']} |")


if __name__ == "__main__":
    main()
