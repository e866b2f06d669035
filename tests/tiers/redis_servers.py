"""Real redis-server processes for the tier tests: one server, or a 3-node cluster, on free
loopback ports, with no persistence. Stopping and starting a server keeps its port, so a test
can take Redis away mid-run and bring it back."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 40000)
        if _is_free(port) and _is_free(port + 10000):
            return port


def need_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (make system-deps installs it)")


class RedisServer:
    def __init__(self, directory: Path, *extra: str):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--enable-debug-command", "local", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):  # readiness poll, not a timing assertion
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class RedisClusterNodes:
    """Three masters made into one cluster by `redis-cli --cluster create`."""

    def __init__(self, directory: Path):
        self.nodes = [RedisServer(directory / f"node{i}", "--cluster-enabled", "yes", "--cluster-config-file",
                                  "nodes.conf", "--cluster-node-timeout", "2000") for i in range(3)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisClusterNodes:
        try:
            return self._start()
        except BaseException:
            self.stop()  # never leave nodes running behind a failed start
            raise

    def _start(self) -> RedisClusterNodes:
        for node in self.nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for _ in range(1000):  # until every node agrees that all slots are served
            if all(n.client().execute_command("CLUSTER INFO").get("cluster_state") == "ok" for n in self.nodes):
                return self
            time.sleep(0.01)
        raise RuntimeError("the Redis cluster did not come up")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
