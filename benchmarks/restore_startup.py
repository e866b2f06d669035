"""Start-up with `--restore-retained` and many recorded pins: when does the server answer?

Writes `--pins` admin-pin records (distinct salts, one short prefix each, as a tenant pinning
with a new salt per request would leave them) into a fresh records file, then starts
`promptcache serve --restore-retained` on it and reports, from the spawn: when /health answers,
when a one-token chat request is answered, and when the restore has finished (its log line,
with how many prefixes it re-pinned). The restore runs in the background and re-pins at most
`max_records_per_tenant` (1,000) per tenant, so the first two no longer wait for the third.

    python benchmarks/restore_startup.py               # SmolLM2, 1,100 pins
    python benchmarks/restore_startup.py --pins 200
"""

from __future__ import annotations

import argparse
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from promptcache.server.admin import pin_owner  # noqa: E402
from promptcache.server.app import engine_from_settings  # noqa: E402
from promptcache.server.core.records import Record, SqliteRecords  # noqa: E402
from promptcache.server.settings import ServerSettings  # noqa: E402

PREFIX = "Keep this warm."


def write_pins(db: Path, count: int) -> None:
    engine = engine_from_settings(ServerSettings())  # for its model id and tokenizer only
    tokens = engine.tokenizer.encode(PREFIX, add_special_tokens=True)
    store = SqliteRecords(db)
    for i in range(count):
        owner = pin_owner("default", f"salt-{i}", tokens)
        store.put(Record("pin", "default", owner, {"owner": owner, "tokens": tokens, "salt": f"salt-{i}",
                                                   "model_id": engine.model_id}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pins", type=int, default=1100)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="restore-startup-"))
    db = workdir / "records.sqlite3"
    write_pins(db, args.pins)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-c", "from promptcache.cli.main import app; app()", "serve", "--port", str(port),
           "--records-db", str(db), "--restore-retained", "--log-level", "info"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    restored: list[tuple[float, str]] = []

    def watch() -> None:
        for line in proc.stderr:
            if "re-pinned" in line:
                restored.append((time.monotonic() - start, line.strip()))

    threading.Thread(target=watch, daemon=True).start()
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)  # polling a starting process, not a measurement
        health_s = time.monotonic() - start
        chat = httpx.post(url + "/v1/chat/completions", timeout=600, json={
            "model": "SmolLM2-135M-Instruct", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi."}]})
        chat_s = time.monotonic() - start
        while not restored:
            time.sleep(0.2)
        print(f"{platform.machine()}, {args.pins} recorded pins of {len(PREFIX)} characters, distinct salts")
        print(f"/health answered        {health_s:6.1f} s after the spawn")
        print(f"first chat answered     {chat_s:6.1f} s (status {chat.status_code})")
        print(f"restore finished        {restored[0][0]:6.1f} s: {restored[0][1].split('re-pinned', 1)[1]}")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
