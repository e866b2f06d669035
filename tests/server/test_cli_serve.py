"""`promptcache serve` as a user runs it: a subprocess configured by flags, env and a TOML file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from live_server import free_port

CLI = [sys.executable, "-c", "from promptcache.cli.main import app; app()"]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not come up")


def test_serve_reads_env_config_and_keys(tiny_llama_dir, tmp_path):
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text('max-queue = 3\neviction_policy = "lfu"\nport = 1\nblock_size = 32\ndefault_max_tokens = 3\n')
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\nsecret-a = { tenant = "team-a", quota_mb = 2 }\n')
    env = {**os.environ, "PROMPTCACHE_PORT": str(port), "PROMPTCACHE_CACHE_MB": "8",
           "PROMPTCACHE_HTTP_MAX_HEADER_BYTES": "2048"}
    proc = subprocess.Popen(
        [*CLI, "serve", "--model", str(tiny_llama_dir),
         "--config", str(config), "--keys-file", str(keys), "--admin-key", "root", "--log-level", "warning",
         "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"  # the env port wins over the file's
    try:
        wait_healthy(url, proc)
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/health", headers={"X-Big": "x" * 4096}).status_code == 431  # the env's head cap
        tenant = {"Authorization": "Bearer secret-a"}
        models = httpx.get(url + "/v1/models", headers=tenant).json()
        reply = httpx.post(url + "/v1/completions", headers=tenant, json={
            "model": models["data"][0]["id"], "prompt": "Once upon a time " * 4, "ignore_eos": True}).json()
        stats = httpx.get(url + "/v1/cache/stats", headers={"Authorization": "Bearer root"}).json()
        assert reply["usage"]["completion_tokens"] == 3  # the file's default_max_tokens
        assert stats["block_size"] == 32  # the file's block_size
        assert 7 * 2**20 < stats["max_bytes"] <= 8 * 2**20  # the environment's cache_mb
        assert "alice" not in stats["prompt_cache_keys"] and "team-a" in stats["prompt_cache_keys"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    assert any(e["level"] == "warning" and "readable by other users" in e["message"] for e in lines), output


@pytest.mark.parametrize("text, expected", [
    ("no_such_setting = 1\n", "no_such_setting"),
    ("max_queue = 0\n", "max_queue must be at least 1"),
    ("max_messages = 0\n", "max_messages must be"),
    ('log_format = "xml"\n', "log_format must be one of"),
])
def test_serve_rejects_a_bad_setting_in_one_line(tmp_path, text, expected):
    config = tmp_path / "server.toml"
    config.write_text(text)
    proc = subprocess.run(
        [*CLI, "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
