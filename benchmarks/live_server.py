"""Start `promptcache serve` in a subprocess on a free loopback port, for the benchmarks that
measure a live server (server.py, fairness.py, adversarial.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def serve(options: list[str], *, startup_s: float = 300) -> tuple[subprocess.Popen, str]:
    """Run the server with `options` (besides --port); returns the process and its base URL once
    /health answers. Exits with a one-line message if it does not start."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-c", "from promptcache.cli.main import app; app()", "serve", "--port", str(port),
           "--log-level", "warning", *options]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)  # polling a starting process, not a measurement
    proc.terminate()
    raise SystemExit("the server did not start")
