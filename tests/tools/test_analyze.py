"""`promptcache analyze`: exact figures on logs small enough to compute by hand, bad lines, the
lint findings, and agreement with what a live server reports for the same requests."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from promptcache.cli.main import app
from promptcache.model.source import open_model

A, B, C, D = [1, 2, 3, 4], [5, 6, 7, 8], [30, 31, 32, 33], [34, 35, 36, 37]


def write_log(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def run_analyze(log, model_dir, *args):
    result = CliRunner().invoke(app, ["analyze", str(log), "--model", str(model_dir), "--json", "--block-sizes", "4",
                                      "--replicas", "1", "--block-size", "4", "--jobs", "1", "--min-computed-tokens", "1", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def completion(ids):
    return {"model": "m", "prompt": ids}


def test_exact_hits_and_bad_lines_counted(tiny_llama_dir, tmp_path):
    # Block size 4. Each match stops one token short of the prompt (the last token is always
    # computed), so at most (len - 1) // 4 blocks hit:
    #   A+B+[9,10]      10 tokens: cache empty                                -> 0
    #   A+B+[20,21,22]  11 tokens: A, B cached, limit 2 blocks               -> 8
    #   A+C+D           12 tokens: A cached, C not (then C, D are stored)    -> 4
    #   A+B              8 tokens: limit (8 - 1) // 4 = 1 block              -> 4
    log = write_log(tmp_path / "log.jsonl", [
        completion(A + B + [9, 10]),
        "this is not json",
        {"ts": 3, "endpoint": "/v1/completions", "body": completion(A + B + [20, 21, 22])},
        [1, 2],
        "",
        {"foo": 1},
        {"model": "m", "messages": "hello"},
        {"ts": 4, "endpoint": "/v1/chat/completions", "status": 200, "request_id": "req_1"},  # no body
        {"ts": 4.5, "endpoint": "/v1/completions", "status": 400, "body": completion([1])},  # refused
        completion(A + C + D),
        {"prompt": A + B, "timestamp": "2026-01-01T00:00:09Z"},
        '{"tenant": "\\ud800", "body": {"model": "m", "prompt": [1, 2, 3, 4, 5]}}',  # a lone surrogate
    ])
    report = run_analyze(log, tiny_llama_dir, "--cache-mb", "64")
    assert (report["prompt_tokens"], report["hit_tokens"]) == (41, 16)
    assert report["hit_ratio"] == pytest.approx(16 / 41)
    assert report["requests"] == 4 and report["lines"] == 11
    assert report["bad_lines"] == 5 and [b["line"] for b in report["bad_examples"]] == [2, 4, 6, 7, 12]
    assert (report["without_body"], report["refused"]) == (1, 1)
    assert report["memory"]["footprint_mb"] * 2**20 == 4 * report["settings"]["block_nbytes"]  # A, B, C, D
    assert report["prefill_s_saved"] == pytest.approx(16 / report["settings"]["prefill_tok_s"])
    top = report["top_prefixes"][0]
    assert (top["tokens"], top["requests"]) == (4, 4)  # A opens every prompt; A+B is shared by 3


def test_cache_size_decides_what_hits(tiny_llama_dir, tmp_path):
    # A+B, then C+D, then A+B again. Room for 4 blocks: the third hits 8 tokens. Room for 2:
    # storing C and D evicts B, then A (LRU), so the third hits nothing.
    log = write_log(tmp_path / "log.jsonl", [completion(A + B + [9]), completion(C + D + [9]), completion(A + B + [9])])
    block_mb = 4 * open_model(str(tiny_llama_dir)).config.kv_bytes_per_token(2) / 2**20
    report = run_analyze(log, tiny_llama_dir, "--cache-mb", str(4 * block_mb), "--sizes-mb", f"{2 * block_mb},{4 * block_mb}")
    assert report["hit_tokens"] == 8
    assert [p["hit_tokens"] for p in report["curves"]["lru"]] == [0, 8]
    assert report["memory"]["mb_for_95pct_of_best_lru"] == pytest.approx(4 * block_mb)


def chat(system, user, tools=None, assistant=None):
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if assistant:
        messages += [assistant, {"role": "user", "content": "and then?"}]
    return {"model": "m", "messages": messages, **({"tools": tools} if tools else {})}


def test_lint_points_at_timestamps_tool_order_and_dropped_reasoning(tiny_llama_dir, tmp_path):
    base = "You are a helpful assistant for the travel desk. " * 4
    tools = [{"type": "function", "function": {"name": n, "description": n, "parameters": {}}} for n in ("a", "b", "c")]
    thought = {"role": "assistant", "content": "Paris.", "reasoning_content": "The user wants a capital city."}
    log = write_log(tmp_path / "log.jsonl", [
        chat(f"Today is 2026-01-0{d} 10:00. {base}", "hi") for d in range(1, 4)] + [
        chat(base, "q", tools), chat(base, "q", tools), chat(base, "q", tools[::-1]),
        chat(base, "capital?", assistant=thought),
        {"model": "m", "messages": [{"role": "user", "content": "x"},
                                    {"role": "assistant", "content": "<think>Let me count.</think>Four."},
                                    {"role": "user", "content": "y"}]},
    ])
    report = run_analyze(log, tiny_llama_dir)
    findings = {f["kind"]: f for f in report["lint"]}
    assert findings["volatile-system-prompt"]["affected"] == 3
    assert findings["volatile-system-prompt"]["char"] == len("Today is 2026-01-0")
    assert "2026-01-0" in findings["volatile-system-prompt"]["message"]
    assert findings["tool-order"]["affected"] == 1 and findings["tool-order"]["example_line"] == 6
    assert findings["tool-order"]["position"].startswith("tool 0")
    # reasoning_content is never rendered; SmolLM2's template keeps a <think> block in the content.
    assert findings["reasoning-dropped"]["affected"] == 1 and findings["reasoning-dropped"]["example_line"] == 7


def test_dialects_give_the_same_tokens(tiny_llama_dir, tmp_path):
    """The same conversation as OpenAI chat, Anthropic messages and Responses bodies renders to
    the same prompt, so the last two requests hit the first one's blocks."""
    system, user = "You are terse. " * 10, "Name a planet."
    log = write_log(tmp_path / "log.jsonl", [
        {"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]},
        {"ts": 2, "endpoint": "/v1/messages", "body": {"model": "m", "max_tokens": 5, "system": system,
                                                         "messages": [{"role": "user", "content": [{"type": "text", "text": user}]}]}},
        {"model": "m", "instructions": system, "input": user},
    ])
    report = run_analyze(log, tiny_llama_dir)
    per_request = report["prompt_tokens"] // 3
    assert report["prompt_tokens"] == 3 * per_request
    assert report["hit_tokens"] == 2 * ((per_request - 1) // 4 * 4)


def test_bad_options_are_one_line_errors(tiny_llama_dir, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [completion(A)])
    result = CliRunner().invoke(app, ["analyze", str(log), "--model", str(tiny_llama_dir), "--policy", "fifo"])
    assert result.exit_code == 1 and "unknown eviction policy 'fifo'" in result.output
    result = CliRunner().invoke(app, ["analyze", str(log), "--model", str(tiny_llama_dir), "--sizes-mb", "1,x"])
    assert result.exit_code == 1 and "--sizes-mb must be numbers" in result.output


def test_rendering_in_worker_processes_gives_the_same_prompts(tiny_llama_dir):
    from promptcache.analyze.dialects import parse_body
    from promptcache.analyze.render import render_all

    tokenizer = open_model(str(tiny_llama_dir)).tokenizer
    prompts = [parse_body(chat("Be brief. " * i, f"question {i}")) for i in range(7)] + [
        parse_body({"model": "m", "prompt": "plain text"})]
    serial = render_all(prompts, tokenizer, jobs=1, chunk=100)
    forked = render_all(prompts, tokenizer, jobs=2, chunk=3)
    assert [(list(r.tokens), r.roles, r.text) if not isinstance(r, str) else r for r in serial] == \
        [(list(r.tokens), r.roles, r.text) if not isinstance(r, str) else r for r in forked]
    # The piece memo gives the server renderer's own tokens.
    from promptcache.server.chat import ChatRenderer

    plain = ChatRenderer(tokenizer)
    for prompt, rendered in zip(prompts[:7], serial):
        assert list(rendered.tokens) == plain.render(prompt.messages).tokens
    assert list(serial[7].tokens) == tokenizer.encode("plain text")
