"""Short prompts through the server (tiny model): a prompt of one block and a token or more
reads its full blocks when sent again, and what a reply's usage reports, what
/v1/cache/explain says it would read and `reusable_prefix` (the rule, cache/reusable.py) agree.
The issue this closes: the same 26-token prompt sent three times reported cached_tokens 0
each time, while explain said 16 tokens were held and would_read 0."""

from __future__ import annotations

import httpx

from promptcache.server.core.usage import reusable_prefix

BLOCK = 16


def complete(server, ids: list[int]) -> httpx.Response:
    r = httpx.post(server.base_url + "/completions", timeout=60,
                   json={"model": server.model, "prompt": ids, "max_tokens": 2})
    assert r.status_code == 200, r.text
    return r


def explain(server, ids: list[int]) -> dict:
    r = httpx.post(server.url + "/v1/cache/explain", json={"model": server.model, "prompt": ids},
                   params={"dialect": "completions"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_same_26_token_prompt_three_times_reads_its_first_block(tiny_server):
    ids = list(range(1000, 1026))
    assert explain(tiny_server, ids)["would_read"] == 0
    first = complete(tiny_server, ids).json()["usage"]
    assert first["prompt_tokens"] == 26 and first["prompt_tokens_details"]["cached_tokens"] == 0
    answer = explain(tiny_server, ids)
    assert answer["cached_tokens"] == answer["would_read"] == 16
    for _ in range(2):
        reply = complete(tiny_server, ids)
        assert reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 16
        assert reply.headers["x-cache-hit-tokens"] == "16"


def test_usage_explain_and_the_rule_agree_around_the_block_lines(tiny_server):
    for n in (17, 18, 31, 32, 33, 47, 48, 49, 64, 65):
        ids = list(range(2000 + 100 * n, 2000 + 101 * n))  # no prompt shares a block with another
        complete(tiny_server, ids)
        answer = explain(tiny_server, ids)
        assert answer["cached_tokens"] == n // BLOCK * BLOCK  # every full block was saved
        assert answer["would_read"] == reusable_prefix(n, BLOCK) == (n - 1) // BLOCK * BLOCK, n
        usage = complete(tiny_server, ids).json()["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == answer["would_read"], n
