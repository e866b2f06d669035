"""Warm prompts on the real embedded SmolLM2-135M-Instruct with its own chat template: a prompt
registered with warm: true has its static prefix computed and pinned, so the very first
request that uses it, through the official client, is already a cache hit, and the hit changes
nothing in the greedy reply."""

from __future__ import annotations

import json

import httpx
import pytest
from live_server import start_server
from server_prompts import SYSTEM_PROMPT

from promptcache.server.settings import build_settings

pytestmark = pytest.mark.slow

# The static prefix ends in a space that the tokenizer merges with the value after it (" Ann"):
# the warm prefix must stop before it, or the first request would miss from that block on.
KEY = "key-warm-prompts"
TEMPLATE = SYSTEM_PROMPT + " The customer is {{customer}} and asks about {{topic}}."


@pytest.fixture(scope="module")
def smol_server(smollm2_engine, tmp_path_factory):
    """A server of its own over the session's SmolLM2 engine, for a tenant of its own: whatever
    other modules cached in that engine is in other tenants' namespaces, so a hit here is the
    warm-up's."""
    keys_file = tmp_path_factory.mktemp("warm-keys") / "keys.json"
    keys_file.write_text(json.dumps({KEY: {"tenant": "warm-prompts"}}))
    settings = build_settings(dict(default_max_tokens=8, responses_db=":memory:", prompt_store=":memory:"),
                              keys_file=keys_file)
    server = start_server(settings, engine=smollm2_engine)
    yield server
    server.stop()


def test_the_first_request_after_a_warm_registration_hits(smol_server):
    http = httpx.Client(base_url=smol_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    registered = http.post("/v1/prompts", json={"template": TEMPLATE, "warm": True}).json()
    assert registered["warm_tokens"] >= 320  # the ~335-token static prefix, in whole 16-token blocks
    client = smol_server.client(api_key=KEY)
    prompt = {"id": registered["id"], "variables": {"customer": "Ann", "topic": "refunds"}}
    first = client.responses.create(model=smol_server.model, input="What do I say?", prompt=prompt,
                                    max_output_tokens=8, temperature=0)
    assert first.usage.input_tokens_details.cached_tokens >= registered["warm_tokens"]
    uncached = client.responses.create(model=smol_server.model, input="What do I say?", prompt=prompt,
                                       max_output_tokens=8, temperature=0,
                                       extra_body={"caching": {"type": "disabled"}})
    assert uncached.usage.input_tokens_details.cached_tokens == 0
    assert first.output_text == uncached.output_text and first.output_text.strip()

    chat = client.chat.completions.create(
        model=smol_server.model, messages=[{"role": "user", "content": "Hello?"}], max_tokens=4, temperature=0,
        extra_body={"prompt": {**prompt, "variables": {"customer": "Bo", "topic": "delivery"}}})
    assert chat.usage.prompt_tokens_details.cached_tokens >= registered["warm_tokens"]
    assert http.delete(f"/v1/prompts/{registered['id']}").status_code == 200  # the pin released
