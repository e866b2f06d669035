"""The Gemini dialect on the embedded SmolLM2 behind a live server: cachedContents round trip,
generateContent and streamGenerateContent reading the cached content, Gemini-shaped errors.
No official Gemini client is installed in the test environment, so the requests are the REST
API's documented JSON, sent with httpx."""

from __future__ import annotations

import json

import httpx
import pytest
from live_server import start_server
from server_prompts import SYSTEM_PROMPT

from promptcache.server.settings import build_settings

KEYS = {"key-alice": {"tenant": "alice"}, "key-bob": {"tenant": "bob"}}
ALICE = {"x-goog-api-key": "key-alice"}
BOB = {"x-goog-api-key": "key-bob"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_engine):
    tmp = tmp_path_factory.mktemp("gemini")
    (tmp / "keys.json").write_text(json.dumps(KEYS))
    settings = build_settings(dict(default_max_tokens=8, records_db=str(tmp / "records.sqlite3")),
                              keys_file=tmp / "keys.json")
    live = start_server(settings, smollm2_engine)
    yield live
    live.stop()
    smollm2_engine.flush_cache(include_pinned=True)


def test_cached_contents_round_trip(server):
    base, model = server.url + "/v1beta", server.model
    body = {"model": f"models/{model}", "displayName": "handbook", "ttl": "600s",
            "systemInstruction": {"parts": [{"text": "Gemini test. " + SYSTEM_PROMPT}]},
            "contents": [{"role": "user", "parts": [{"text": "Read the handbook."}]},
                         {"role": "model", "parts": [{"text": "Done."}]}]}
    created = httpx.post(base + "/cachedContents", json=body, headers=ALICE, timeout=60)
    assert created.status_code == 200, created.text
    cc = created.json()
    assert cc["name"].startswith("cachedContents/") and cc["model"] == f"models/{model}"
    assert cc["displayName"] == "handbook" and cc["usageMetadata"]["totalTokenCount"] > 300
    assert cc["expireTime"].endswith("Z")
    name = cc["name"]
    assert httpx.get(f"{base}/{name}", headers=ALICE).json()["name"] == name
    assert name in [c["name"] for c in httpx.get(base + "/cachedContents", headers=ALICE).json()["cachedContents"]]
    ask = {"cachedContent": name, "contents": [{"role": "user", "parts": [{"text": "Rule 3?"}]}],
           "generationConfig": {"maxOutputTokens": 4, "temperature": 0}}
    reply = httpx.post(f"{base}/models/{model}:generateContent", json=ask, headers=ALICE, timeout=60).json()
    usage = reply["usageMetadata"]
    assert reply["candidates"][0]["content"]["role"] == "model"
    assert reply["candidates"][0]["finishReason"] in ("STOP", "MAX_TOKENS")
    assert usage["cachedContentTokenCount"] >= cc["usageMetadata"]["totalTokenCount"] - 32
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    with httpx.stream("POST", f"{base}/models/{model}:streamGenerateContent?alt=sse", json=ask, headers=ALICE,
                      timeout=60) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    streamed = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert streamed == reply["candidates"][0]["content"]["parts"][0]["text"]
    # at least the cached content again; the first request's own full blocks may be read too
    assert events[-1]["usageMetadata"]["cachedContentTokenCount"] >= usage["cachedContentTokenCount"]
    patched = httpx.patch(f"{base}/{name}", json={"ttl": "60s"}, headers=ALICE).json()
    assert patched["expireTime"] < cc["expireTime"]
    other = httpx.get(f"{base}/{name}", headers=BOB)
    assert other.status_code == 404 and other.json()["error"]["status"] == "NOT_FOUND"
    assert httpx.post(f"{base}/models/{model}:generateContent", json=ask, headers=BOB).status_code == 404
    assert httpx.delete(f"{base}/{name}", headers=ALICE).json() == {}
    gone = httpx.post(f"{base}/models/{model}:generateContent", json=ask, headers=ALICE)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == 404


def test_gemini_errors_have_gemini_shape(server):
    base, model = server.url + "/v1beta", server.model
    unknown = httpx.post(f"{base}/models/{model}:generateContent", headers=ALICE,
                         json={"contents": [{"parts": [{"text": "hi"}]}], "safetySettings": []})
    assert unknown.status_code == 400 and unknown.json()["error"]["status"] == "INVALID_ARGUMENT"
    bad_ttl = httpx.post(base + "/cachedContents", headers=ALICE,
                         json={"model": f"models/{model}", "contents": [{"parts": [{"text": "x"}]}], "ttl": "1h"})
    assert bad_ttl.status_code == 400 and "ttl" in bad_ttl.json()["error"]["message"]
    no_model = httpx.post(f"{base}/models/other-model:generateContent", headers=ALICE,
                          json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert no_model.status_code == 404 and no_model.json()["error"]["status"] == "NOT_FOUND"
    keyless = httpx.post(f"{base}/models/{model}:generateContent", json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert keyless.status_code == 401 and keyless.json()["error"]["status"] == "UNAUTHENTICATED"
