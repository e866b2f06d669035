"""`promptcache bench` against a live server (tiny random-weight model) with the openai client."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from promptcache.bench.workloads import WORKLOADS, Sizes, build
from promptcache.cli.main import app

ROW_FIELDS = {"endpoint", "conversation", "turn", "start_s", "ttft_s", "itl_s", "total_s", "prompt_tokens",
              "completion_tokens", "cached_tokens", "cached_share", "error"}
SUMMARY_FIELDS = {"requests", "errors", "prompt_tokens", "cached_tokens", "cached_share", "completion_tokens",
                  "ttft_p50_s", "ttft_p90_s", "ttft_mean_s", "itl_p50_s", "total_p50_s", "wall_s", "output_tokens_per_s"}
SMALL = ["--conversations", "3", "--turns", "2", "--shared-tokens", "64", "--turn-tokens", "6", "--max-tokens", "4"]


def run_bench(server, *args: str):
    result = CliRunner().invoke(app, ["bench", "--base-url", server.base_url, "--model", server.model, *SMALL, *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_each_workload_completes_with_documented_json(bench_server, tmp_path, workload):
    out = tmp_path / "report.json"
    # An agent step's reply is JSON on a model without a tool template ({"response": "..."}):
    # four tokens end inside its opening, which is no text and no call, so no first token.
    longer = ["--max-tokens", "12"] if workload == "agent" else []
    run_bench(bench_server, "--workload", workload, "--concurrency", "2", "--out", str(out), *longer)
    doc = json.loads(out.read_text())
    rows = doc["requests"]
    expected = sum(len(c.turns) for c in build(workload, Sizes(conversations=3, turns=2, shared_tokens=64, turn_tokens=6)))
    assert len(rows) == expected
    assert all(set(row) == ROW_FIELDS and row["error"] is None for row in rows)
    summary = doc["summary"][bench_server.base_url]
    assert set(summary) == SUMMARY_FIELDS and summary["errors"] == 0
    assert all(0 < row["ttft_s"] <= row["total_s"] and row["prompt_tokens"] > 0 for row in rows)
    # Our server reports cached tokens; the shared opening is cached after the first request.
    assert all(row["cached_tokens"] is not None for row in rows)
    assert summary["cached_tokens"] > 0
    # A later turn of a conversation extends the earlier prompt plus its reply.
    by_turn = {(r["conversation"], r["turn"]): r["prompt_tokens"] for r in rows}
    for (conv, turn), tokens in by_turn.items():
        if turn:
            assert tokens > by_turn[(conv, turn - 1)]


def test_compare_alternates_and_reports_ratios_and_plot(bench_server, tmp_path):
    out, png = tmp_path / "compare.json", tmp_path / "ttft.png"
    second = bench_server.base_url.replace("127.0.0.1", "localhost")
    result = run_bench(bench_server, "--workload", "chat", "--compare", second, "--out", str(out), "--plot", str(png))
    doc = json.loads(out.read_text())
    assert set(doc["summary"]) == {bench_server.base_url, second}
    assert set(doc["ratios"]) == {"ttft_p50_s", "ttft_p90_s", "ttft_mean_s", "itl_p50_s", "total_p50_s"}
    assert all(value > 0 for value in doc["ratios"].values() if value is not None)
    # Every turn went to both endpoints, the first one first on even turns, the other on odd ones.
    sent: dict[tuple[int, int], list[str]] = {}
    for row in sorted(doc["requests"], key=lambda r: r["start_s"]):
        sent.setdefault((row["conversation"], row["turn"]), []).append(row["endpoint"])
    assert sorted(sent) == [(conv, turn) for conv in range(3) for turn in range(2)]
    for (_, turn), endpoints in sent.items():
        assert endpoints == [bench_server.base_url, second][:: 1 if turn % 2 == 0 else -1]
    assert "ratio" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_workloads_are_deterministic_and_bad_input_is_one_line():
    sizes = Sizes(conversations=4, turns=3, shared_tokens=100, turn_tokens=10)
    for name in WORKLOADS:
        assert build(name, sizes, seed=7) == build(name, sizes, seed=7)
        assert build(name, sizes, seed=7) != build(name, sizes, seed=8)
    result = CliRunner().invoke(app, ["bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--workload", "nope"])
    assert result.exit_code == 1 and "unknown workload 'nope'" in result.output
