"""The scale-out end to end: three replicas of the tiny model as a Ray Serve application on a
local Ray, behind the ingress, driven over HTTP by the official openai client; a single server
over the same model is the reference. One Ray instance and one application for the module
(conftest.py); the router's mode is switched between phases, and each phase uses its own
conversations, so no phase reads another's cache.

Every wait has a deadline: a request that hangs fails the test instead of the suite.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import openai
import pytest
from deadline import wait_until

from promptcache.bench.runner import Endpoint, Runner
from promptcache.bench.workloads import Sizes, build

pytestmark = pytest.mark.timeout(300)

# Short shared system prompt, long turns: what a later turn can reuse is mostly its own
# conversation's earlier prompt, which only the replica that served it holds.
SIZES = Sizes(conversations=4, turns=3, shared_tokens=32, turn_tokens=96)
CLIENT_TIMEOUT_S = 60


def run_chat(base_url: str, model: str, seed: int):
    """The chat workload, conversations interleaved one request at a time (4 conversations over
    3 replicas, so round-robin moves every conversation at every turn)."""
    async def go():
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S)
        try:
            return await Runner([Endpoint("x", client, model)], concurrency=1, max_tokens=8).run(
                build("chat", SIZES, seed=seed))
        finally:
            await client.close()

    rows = asyncio.run(go())
    assert [r.error for r in rows if r.error] == []
    return rows


def later_turn_hit_ratio(rows) -> float:
    later = [r for r in rows if r.turn >= 1]
    return sum(r.cached_tokens for r in later) / sum(r.prompt_tokens for r in later)


def shape(rows):
    return sorted((r.conversation, r.turn, r.prompt_tokens, r.completion_tokens) for r in rows)


def client_of(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S)


def test_prefix_routing_keeps_a_single_replicas_hits_and_round_robin_does_not(cluster, single):
    book = cluster.book
    alone = run_chat(single.base_url, single.model, seed=1)
    book.mode = "prefix"
    routed = run_chat(cluster.base_url, single.model, seed=1)
    book.mode = "round-robin"
    try:
        spread = run_chat(cluster.base_url, single.model, seed=2)
    finally:
        book.mode = "prefix"
    one, prefix, rr = map(later_turn_hit_ratio, (alone, routed, spread))
    print(f"later-turn token hit ratio: 1 replica {one:.3f}, 3 prefix {prefix:.3f}, 3 round-robin {rr:.3f}")
    assert one > 0.5
    assert prefix >= 0.95 * one
    assert rr < 0.8 * prefix
    assert shape(routed) == shape(alone)  # the same greedy replies, hence the same later prompts
    snapshot = book.snapshot()
    assert all(r["trusted"] for r in snapshot.values())
    assert sum(r["disagreements"] for r in snapshot.values()) == 0  # every prediction came true
    assert sum(r["predicted_tokens"] for r in snapshot.values()) > 0


def test_greedy_replies_through_the_router_equal_a_single_servers(cluster, single):
    one, many = client_of(single.base_url), client_of(cluster.base_url)
    for i, question in enumerate(["Name three rivers.", "What is two plus two?", "Write a haiku about tea."]):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
        args = dict(model=single.model, messages=messages, max_tokens=12, temperature=0)
        want = one.chat.completions.create(**args).choices[0].message.content
        assert many.chat.completions.create(**args).choices[0].message.content == want
        streamed = "".join(c.choices[0].delta.content or "" for c in many.chat.completions.create(stream=True, **args)
                           if c.choices)
        assert streamed == want
        text_args = dict(model=single.model, prompt=f"Item {i}: {question}", max_tokens=10, temperature=0)
        assert many.completions.create(**text_args).choices[0].text == one.completions.create(**text_args).choices[0].text


def test_cache_keys_and_response_chains_stay_on_their_replica(cluster):
    """Affinity by prompt_cache_key and previous_response_id, on prompts that share nothing (so
    only affinity can keep them together). Session ids route the same way (test_book.py,
    test_hints.py); a session must exist before a turn may name it."""
    client, book = client_of(cluster.base_url), cluster.book
    model = client.models.list().data[0].id

    def chat(text, **extra):
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               max_tokens=2, **extra)
        return book.where(reply.id)

    keyed = [chat(f"unrelated question number {i} " * 3, extra_body={"prompt_cache_key": "key-7"})
             for i in range(3)]
    assert len({replica for replica, _ in keyed}) == 1
    assert [reason for _, reason in keyed[1:]] == ["affinity", "affinity"]

    first = client.responses.create(model=model, input="Tell me about rivers.", max_output_tokens=4)
    follow = client.responses.create(model=model, input="And lakes?", previous_response_id=first.id,
                                     max_output_tokens=4)
    assert book.where(follow.id) == (book.where(first.id)[0], "affinity")


def test_what_reads_one_engines_cache_is_a_clear_501(cluster):
    model = client_of(cluster.base_url).models.list().data[0].id
    with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
        answer = http.post("/v1/cache/explain", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 501
    assert answer.json()["error"]["code"] == "not_implemented"


def test_a_client_that_goes_away_aborts_its_request_on_the_replica(cluster):
    book = cluster.book
    aborted = lambda: sum(r["reported_aborted"] for r in book.snapshot().values())  # noqa: E731
    before = aborted()
    model = client_of(cluster.base_url).models.list().data[0].id
    body = {"model": model, "prompt": "Count forever:", "max_tokens": 1800, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # the stream started; now the client goes away
        poke = lambda: http.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 1})  # noqa: E731
        # The replicas' reports (read by the router at each request) count the cancelled request.
        wait_until(lambda: aborted() > before, "the replica to abort the request", 60, poke)
        wait_until(lambda: all(r["reported_running"] == 0 for r in book.snapshot().values()),
                   "the replicas to be idle", 60, poke)


def test_killing_a_replica_fails_its_requests_cleanly_and_routes_new_ones_elsewhere(cluster):
    import ray

    book = cluster.book
    model = client_of(cluster.base_url).models.list().data[0].id
    results: dict[str, object] = {}
    streaming = threading.Event()

    def long_request(name: str, stream: bool):
        body = {"model": model, "prompt": f"Go on {name}:", "max_tokens": 1800, "ignore_eos": True, "stream": stream,
                "prompt_cache_key": "doomed"}
        try:
            with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
                with http.stream("POST", "/v1/completions", json=body) as r:
                    lines = []
                    for line in r.iter_lines():
                        lines.append(line)
                        streaming.set()  # tokens are flowing: the kill lands mid-stream
                    results[name] = (r.status_code, "\n".join(lines))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
            results[name] = exc

    threads = [threading.Thread(target=long_request, args=(name, name == "streamed"), daemon=True)
               for name in ("plain", "streamed")]
    for t in threads:
        t.start()
    wait_until(lambda: sum(r["in_flight"] for r in book.snapshot().values()) == 2 and streaming.is_set(),
               "both requests in flight, one streaming", 60)
    victim = next(rid for rid, r in book.snapshot().items() if r["in_flight"])
    assert book.snapshot()[victim]["in_flight"] == 2  # one prompt_cache_key: one replica
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if victim in a["name"]]
    assert len(actors) == 1
    ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)
    for t in threads:
        t.join(CLIENT_TIMEOUT_S)
        assert not t.is_alive(), "a request on the killed replica hung"
    status, text = results["plain"]
    assert status == 503 and "engine_failure" in text
    status, text = results["streamed"]
    assert status == 200 and '"error"' in text and text.rstrip().endswith("[DONE]")
    client = client_of(cluster.base_url)
    for i in range(3):  # new requests, the same cache key's included, are served by the others
        reply = client.completions.create(model=model, prompt=f"after {i}", max_tokens=2,
                                          extra_body={"prompt_cache_key": "doomed"})
        assert book.where(reply.id)[0] != victim
