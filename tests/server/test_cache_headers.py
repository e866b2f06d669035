"""Cache diagnostics on every generation endpoint: x-cache-hit-tokens, x-cache-tiers and, on a
partial hit, x-cache-divergence, streaming or not, in each dialect (live server, tiny model)."""

from __future__ import annotations

import httpx
import pytest
from server_prompts import SYSTEM_PROMPT, chat

BODIES = {
    "/v1/chat/completions": lambda system, user: {"messages": chat(system, user), "max_tokens": 2},
    "/v1/completions": lambda system, user: {"prompt": system + " " + user, "max_tokens": 2},
    "/v1/messages": lambda system, user: {"system": system, "max_tokens": 2,
                                          "messages": [{"role": "user", "content": user}]},
    "/v1/responses": lambda system, user: {"instructions": system, "input": user, "max_output_tokens": 2,
                                           "store": False},
}


def post(server, path: str, body: dict, stream: bool) -> httpx.Response:
    body = {"model": server.model, "temperature": 0, "stream": stream, **body}
    with httpx.stream("POST", server.url + path, json=body, timeout=60) as r:
        r.read()
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("path", list(BODIES))
def test_headers_report_the_hit_and_where_the_prompt_left_the_cache(tiny_server, path, stream):
    system = f"{path} {stream}: " + SYSTEM_PROMPT
    cold = post(tiny_server, path, BODIES[path](system, "First question?"), stream)
    assert cold.headers["x-cache-hit-tokens"] == "0"
    assert cold.headers["x-cache-tiers"] == "memory=0;disk=0;redis=0"
    assert "x-cache-divergence" not in cold.headers
    warm = post(tiny_server, path, BODIES[path](system, "A different second question. " * 12),
                stream)
    hit = int(warm.headers["x-cache-hit-tokens"])
    assert hit >= 320 and hit % 16 == 0
    assert warm.headers["x-cache-tiers"] == f"memory={hit};disk=0;redis=0"
    assert warm.headers["x-cache-divergence"] == str(hit)  # the question differs right after it
