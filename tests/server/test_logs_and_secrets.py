"""Logs a client cannot forge or inflate, prompt text only with --log-prompts, request ids
that tie an error body to its log line, and keys held only as digests."""

from __future__ import annotations

import json
import logging

import httpx
from live_server import start_server
from server_prompts import chat

from promptcache.server.logs import JsonFormatter, TextFormatter, log_event
from promptcache.server.settings import ServerSettings, build_settings
from promptcache.server.state import OTHER_KEYS, PromptCacheKeyStats
from promptcache.server.tenants import KeyRing, Tenant, load_keys_file

FORGED = 'k\n2026-01-01 INFO promptcache.server.requests: chat tenant="bob"'


def record_for(logger_name: str, emit) -> logging.LogRecord:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return records[0]


def test_text_event_quotes_escapes_and_truncates_client_strings():
    record = record_for("t.text", lambda lg: log_event(lg, "chat", tenant="alice", cache_key=FORGED + "x" * 500))
    line = TextFormatter("%(message)s").format(record)
    assert "\n" not in line and line.startswith('chat tenant="alice" cache_key="k\\n2026')
    assert 'tenant=\\"bob\\"' in line  # the quote is escaped: no second tenant field
    assert line.endswith(f'...(+{len(FORGED) + 500 - 200} chars)"') and len(line) < 300


def test_text_formatter_escapes_any_message():
    record = record_for("t.any", lambda lg: lg.info("GET %s", "/a\r\nforged\x1b[31m"))
    assert TextFormatter("%(message)s").format(record) == "GET /a\\r\\nforged\\x1b[31m"


def test_json_format_is_one_object_per_line_with_fields():
    record = record_for("t.json", lambda lg: log_event(lg, "chat", tenant="alice", cache_key=FORGED, prompt_tokens=5))
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert (data["event"], data["tenant"], data["cache_key"], data["prompt_tokens"]) == ("chat", "alice", FORGED, 5)
    plain = json.loads(JsonFormatter().format(record_for("t.json2", lambda lg: lg.warning("a\nb"))))
    assert plain["message"] == "a\nb" and plain["level"] == "warning"


def test_key_stats_cap_is_per_tenant():
    stats = PromptCacheKeyStats(max_keys_per_tenant=3)
    for i in range(10):
        stats.record("flood", f"k{i}", 10, 0)
    stats.record("alice", "mine", 10, 5)
    snap = stats.snapshot()
    assert snap["alice"] == {"mine": {"requests": 1, "prompt_tokens": 10, "cached_tokens": 5}}
    assert set(snap["flood"]) == {"k0", "k1", "k2", OTHER_KEYS} and snap["flood"][OTHER_KEYS]["requests"] == 7


def test_key_ring_and_settings_hold_no_plaintext_key():
    ring = KeyRing({"sk-secret-1": Tenant("a")}, admin_key="sk-root", metrics_key="sk-scrape")
    for secret in ("sk-secret-1", "sk-root", "sk-scrape"):
        assert secret not in repr(ring) and secret not in repr(vars(ring))
    settings = build_settings({"admin_key": "sk-root"}, api_keys=["sk-secret-1"])
    assert "sk-secret-1" not in repr(settings) and "sk-root" not in repr(settings)
    assert settings.without_secrets().api_keys == {} and settings.without_secrets().admin_key is None


def test_keys_file_readable_by_others_is_warned_about(tmp_path, caplog):
    path = tmp_path / "keys.toml"
    path.write_text('k = "a"\n')
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="promptcache.server"):
        load_keys_file(path)
    assert "readable by other users" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="promptcache.server"):
        load_keys_file(path)
    assert "readable" not in caplog.text


def ask(server, user_text: str, **extra) -> httpx.Response:
    body = {"model": server.model, "messages": chat("sys", user_text), "max_tokens": 1, **extra}
    return httpx.post(server.base_url + "/chat/completions", json=body)


def test_prompts_are_not_logged_by_default_and_keys_cannot_forge_lines(tiny_server, caplog):
    with caplog.at_level(logging.INFO, logger="promptcache"):
        assert ask(tiny_server, "MARKER-never-logged", prompt_cache_key=FORGED).status_code == 200
    assert "MARKER-never-logged" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if r.name == "promptcache.server.requests"]
    assert len(lines) == 1 and "\n" not in lines[0] and "\\n" in lines[0]


def test_log_prompts_logs_the_prompt_escaped(tiny_llama_dir, caplog):
    server = start_server(ServerSettings(model=str(tiny_llama_dir), log_prompts=True))
    try:
        with caplog.at_level(logging.INFO, logger="promptcache"):
            assert ask(server, "MARKER-logged\nsecond line").status_code == 200
    finally:
        server.stop()
    prompt_lines = [r.getMessage() for r in caplog.records if "MARKER-logged" in r.getMessage()]
    assert len(prompt_lines) == 1 and "MARKER-logged\\nsecond line" in prompt_lines[0]


def test_engine_failure_body_names_the_request_id_not_the_exception(tiny_server, monkeypatch, caplog):
    engine = tiny_server.engine
    real_step = engine.step
    calls = []

    def failing_step():
        if not calls:
            calls.append(1)
            raise RuntimeError("boom in /secret/path/model.py")
        return real_step()

    monkeypatch.setattr(engine, "step", failing_step)
    with caplog.at_level(logging.INFO, logger="promptcache"):
        r = ask(tiny_server, "fail me")
    assert r.status_code == 503
    rid = r.headers["x-request-id"]
    error = r.json()["error"]
    assert error["code"] == "engine_failure" and rid in error["message"]
    assert "RuntimeError" not in r.text and "/secret" not in r.text
    assert any(rid in rec.getMessage() for rec in caplog.records)
    assert ask(tiny_server, "after the failure").status_code == 200


def test_every_response_has_a_request_id_and_4xx_are_logged_with_it(tiny_server, caplog):
    with caplog.at_level(logging.INFO, logger="promptcache"):
        r = httpx.post(tiny_server.base_url + "/chat/completions", json={"model": tiny_server.model, "messages": []})
    assert r.status_code == 400
    assert r.headers["x-request-id"] in caplog.text
    assert httpx.get(tiny_server.url + "/health").headers["x-request-id"].startswith("req_")
