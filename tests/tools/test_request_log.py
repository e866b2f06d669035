"""`serve --request-log`: the JSON lines a live server writes, analysed, agree with what the
server itself reported; bodies only when asked; rotation by size."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from live_server import start_server
from typer.testing import CliRunner

from promptcache.cli.main import app
from promptcache.server.app import engine_from_settings
from promptcache.server.request_log import close_request_logs, open_request_log
from promptcache.server.settings import ServerSettings

SYSTEM = "You are a careful assistant who answers in one short sentence. " * 6


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_dir):
    """One engine for this module's servers (started one after another), so each test does not
    pay the engine's start-up; their prompts share no block."""
    return engine_from_settings(ServerSettings(model=str(tiny_llama_dir)))


def test_analyze_of_the_request_log_matches_the_servers_usage(tiny_llama_dir, tiny_engine, tmp_path):
    log = tmp_path / "requests.jsonl"
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=4, request_log=str(log),
                                         request_log_bodies=True), tiny_engine)
    usages = []
    try:
        client = server.client()
        for question in ("Name a planet.", "Name a colour.", "Name a river.", "Name a planet."):
            reply = client.chat.completions.create(model=server.model, max_tokens=4, messages=[
                {"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
            usages.append(reply.usage)
        try:
            client.chat.completions.create(model=server.model, messages=[{"role": "wizard", "content": "x"}])
        except openai.BadRequestError:  # the 400 is the point: it is logged as refused
            pass
        client.close()
    finally:
        server.stop()
        close_request_logs()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in records] == [200, 200, 200, 200, 400]
    assert all(r["endpoint"] == "/v1/chat/completions" and r["request_id"].startswith("req_") for r in records)
    assert records[0]["body"]["messages"][0]["content"] == SYSTEM
    result = CliRunner().invoke(app, ["analyze", str(log), "--model", str(tiny_llama_dir), "--json", "--jobs", "1",
                                      "--block-sizes", "16", "--replicas", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["requests"] == 4 and report["refused"] == 1 and report["bad_lines"] == 0
    # Same tokens as the server, and the same hits as its cache reported.
    assert report["prompt_tokens"] == sum(u.prompt_tokens for u in usages)
    assert report["hit_tokens"] == sum(u.prompt_tokens_details.cached_tokens for u in usages) > 0


def test_bodies_only_when_asked(tiny_llama_dir, tiny_engine, tmp_path):
    log = tmp_path / "requests.jsonl"
    server = start_server(ServerSettings(model=str(tiny_llama_dir), default_max_tokens=2, request_log=str(log)), tiny_engine)
    try:
        with server.client() as client:  # closed before the server stops, which then need not wait for it
            client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "secret words"}])
    finally:
        server.stop()
        close_request_logs()
    text = log.read_text()
    assert "secret" not in text
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert "body" not in record and record["body_bytes"] > 0 and record["tenant"] == "default"


def test_a_body_with_a_lone_surrogate_is_logged_escaped_and_never_to_stderr(tiny_llama_dir, tiny_engine, tmp_path,
                                                                           capfd):
    log = tmp_path / "requests.jsonl"
    server = start_server(ServerSettings(model=str(tiny_llama_dir), request_log=str(log), request_log_bodies=True),
                          tiny_engine)
    body = {"model": server.model, "max_tokens": 1, "messages": [{"role": "user", "content": "secret \ud800"}]}
    try:
        refused = httpx.post(server.url + "/v1/chat/completions", content=json.dumps(body),
                             headers={"Content-Type": "application/json"}, timeout=60)
    finally:
        server.stop()
        close_request_logs()
    assert refused.status_code == 400
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["status"] == 400 and record["body"] == body
    assert "secret" not in capfd.readouterr().err  # a failed write printed the line, prompt and all


def test_rotated_by_size(tmp_path):
    path = tmp_path / "r.jsonl"
    logger = open_request_log(path, max_bytes=300, backups=2)
    for i in range(40):
        logger.info(json.dumps({"ts": i, "endpoint": "/v1/completions", "padding": "x" * 40}))
    close_request_logs()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 300 for f in files)
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[-1])["ts"] == 39
