"""One local Ray instance and one scale-out application for the live tests of this directory:
three replicas of the tiny random-weight Llama behind the ingress app, served by uvicorn on a
loopback port, and a single server over the same model to compare with.

Ray gets the CPUs of this machine and a small object store (requests and deltas are small).
Both are module-scoped: torn down when the module using them is done.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "server"))
sys.path.insert(0, str(Path(__file__).parent.parent / "tiers"))  # redis_servers, for the Redis test
sys.path.insert(0, str(Path(__file__).parent))

from deadline import wait_until  # noqa: E402
from live_server import free_port, start_server  # noqa: E402
from cluster_settings import REPLICA_CPUS, REPLICAS, settings_for  # noqa: E402

START_TIMEOUT_S = 120


@dataclass
class Cluster:
    url: str
    app: object
    handle: object
    book: object
    server: object
    settings: object

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


@pytest.fixture(scope="module")
def cluster(tiny_llama_dir, tmp_path_factory):
    pytest.importorskip("ray.serve")
    import httpx
    import uvicorn
    from ray import serve

    from promptcache.scaleout.launch import APP, ScaleOut, deploy, ingress_app, shutdown, start_ray

    settings = settings_for(tiny_llama_dir, str(tmp_path_factory.mktemp("records") / "records.sqlite3"))
    cfg = ScaleOut(replicas=REPLICAS, num_cpus=2, object_store_mb=80, stats_period_s=0.5, stale_after_s=10.0,
                   replica_cpus=REPLICA_CPUS)
    start_ray(cfg)
    try:
        handle = deploy(settings, cfg)
        app = ingress_app(settings, cfg, handle)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, name="scaleout-ingress", daemon=True).start()
        wait_until(lambda: server.started, "the ingress", START_TIMEOUT_S)
        url = f"http://127.0.0.1:{port}"
        book = app.state.router_book

        def running() -> int:
            status = serve.status().applications[APP].deployments
            return sum(d.replica_states.get("RUNNING", 0) for d in status.values())

        wait_until(lambda: running() == REPLICAS, "the replicas", START_TIMEOUT_S)
        # Each request makes the router read every replica's latest report; routing on the
        # reports starts once all three have reported.
        with httpx.Client(base_url=url, timeout=30) as client:
            model = client.get("/v1/models").json()["data"][0]["id"]
            wait_until(lambda: len(book.snapshot()) == REPLICAS and all(r["trusted"] for r in book.snapshot().values()),
                       "every replica's first report", START_TIMEOUT_S,
                       poke=lambda: client.post("/v1/completions", json={"model": model, "prompt": "warm", "max_tokens": 1}))
        yield Cluster(url, app, handle, book, server, settings)
        server.should_exit = True
    finally:
        shutdown(cfg)


@pytest.fixture(scope="module")
def single(tiny_llama_dir):
    """The single server the cluster is compared with (the same settings as each replica)."""
    server = start_server(settings_for(tiny_llama_dir))
    yield server
    server.stop()
