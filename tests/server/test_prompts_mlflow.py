"""The prompt registry stored in MLflow: a real `mlflow server` (SQLite backend) started here on a
free loopback port, a live promptcache server with --prompt-store mlflow+http://..., and MLflow's
own client reading and writing the same prompts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from live_server import free_port, start_server
from server_prompts import KEYS

from promptcache.server.settings import build_settings

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'promptcache[mlflow]')")

START_TIMEOUT_S = 180  # a loaded 2-core machine has taken 50 s


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """The process, started but not waited for: the promptcache server starts meanwhile."""
    tmp = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner process
    with open(tmp / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
             "--default-artifact-root", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    yield server, f"http://127.0.0.1:{port}", tmp / "server.log"
    os.killpg(server.pid, signal.SIGKILL)  # the server and the uvicorn process it started; the data is scratch
    server.wait(timeout=30)


def wait_until_up(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("mlflow server did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served(mlflow_server, tiny_llama_dir, keyed_tiny_engine, tmp_path_factory):
    process, url, log = mlflow_server
    keys_file = tmp_path_factory.mktemp("mlflow-keys") / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=4, responses_db=":memory:",
                                   prompt_store="mlflow+" + url), keys_file=keys_file)
    server = start_server(settings, engine=keyed_tiny_engine)  # the store connects on first use
    wait_until_up(process, url, log)
    yield server, mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    server.stop()


def test_prompts_round_trip_through_mlflows_registry(served):
    server, client = served
    http = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer key-alice"}, timeout=60)
    created = http.post("/v1/prompts", json={"template": "Answer {{who}} in one word.", "name": "short"}).json()
    pid = created["id"]
    assert created["version"] == "1" and created["name"] == "short"
    second = http.post(f"/v1/prompts/{pid}/versions", json={"template": "Answer {{who}} twice.",
                                                            "make_default": True}).json()
    assert second["version"] == second["default_version"] == "2"

    # MLflow's own client sees both versions and the default alias...
    [found] = client.search_prompts(filter_string="tags.`promptcache.name` = 'short'")
    assert client.load_prompt(f"prompts:/{found.name}@default").template == "Answer {{who}} twice."
    assert client.get_prompt_version(found.name, 1).template == "Answer {{who}} in one word."
    # ...and a version made in MLflow is served here, rendered like ours.
    client.create_prompt_version(found.name, "Answer {{who}} from MLflow.")
    assert http.get(f"/v1/prompts/{pid}/versions/3").json()["template"] == "Answer {{who}} from MLflow."
    openai_client = server.client(api_key="key-alice")
    ask = lambda **kw: openai_client.responses.create(model=server.model, input="Hi", max_output_tokens=4,  # noqa: E731
                                                      temperature=0, **kw)
    used = ask(prompt={"id": pid, "version": "3", "variables": {"who": "Ann"}})
    plain = ask(instructions="Answer Ann from MLflow.")
    assert used.usage.input_tokens == plain.usage.input_tokens and used.output_text == plain.output_text
    assert ask(prompt={"id": pid, "variables": {"who": "Ann"}}).prompt.version == "2"  # the default

    # Another tenant's id is not found, here or through a generation request.
    bob = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer key-bob"}, timeout=60)
    assert bob.get(f"/v1/prompts/{pid}").status_code == 404
    with pytest.raises(openai.NotFoundError):
        server.client(api_key="key-bob").responses.create(model=server.model, input="Hi",
                                                          prompt={"id": pid, "variables": {"who": "x"}})
    assert [p["id"] for p in http.get("/v1/prompts").json()["data"]] == [pid]

    assert http.delete(f"/v1/prompts/{pid}").json()["deleted"] is True
    assert client.get_prompt(found.name) is None
    assert http.get(f"/v1/prompts/{pid}").status_code == 404
