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


def pinned_on(http: httpx.Client) -> dict[str, int]:
    """Pinned bytes on each replica, from the combined /v1/cache/stats."""
    return {rid: r["pinned_bytes"] for rid, r in http.get("/v1/cache/stats").json()["replicas"].items()}


def test_explain_asks_the_replica_the_prompt_would_go_to(cluster):
    client, book = client_of(cluster.base_url), cluster.book
    model = client.models.list().data[0].id
    prompt = "Explain where this prompt is cached. " * 12
    reply = client.completions.create(model=model, prompt=prompt, max_tokens=1)
    with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
        answer = http.post("/v1/cache/explain", json={"model": model, "prompt": prompt}).json()
    assert answer["replica"] == book.where(reply.id)[0]
    assert answer["cached_tokens"] == reply.usage.prompt_tokens // 16 * 16 > 0  # its full blocks, there


def test_an_admin_pin_holds_on_every_replica_and_unpins_on_every_one(cluster):
    body = {"prompt": "Pinned on every replica. " * 10}
    with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
        pinned = http.post("/v1/cache/pin", json=body).json()
        assert pinned["pinned_blocks"] > 0
        held = pinned_on(http)
        assert len(held) == 3 and all(n > 0 for n in held.values())
        unpinned = http.post("/v1/cache/unpin", json=body).json()
        assert unpinned["unpinned_blocks"] == pinned["pinned_blocks"]
        assert all(n == 0 for n in pinned_on(http).values())


def test_a_session_pins_where_the_router_puts_it_and_its_turns_follow(cluster):
    client, book = client_of(cluster.base_url), cluster.book
    model = client.models.list().data[0].id
    system = {"role": "system", "content": "You answer about rivers, briefly and politely. " * 6}
    with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
        created = http.post("/v1/context", json={"model": model, "messages": [system]}).json()
        assert created["cached_tokens"] > 0
        holders = [rid for rid, n in pinned_on(http).items() if n > 0]
        assert len(holders) == 1  # one replica, the router's pick
        for question in ("Name one.", "Another?"):
            reply = client.chat.completions.create(
                model=model, messages=[system, {"role": "user", "content": question}], max_tokens=3,
                extra_headers={"x-session-id": created["session_id"]})
            assert book.where(reply.id) == (holders[0], "affinity")
        assert http.get(f"/v1/context/{created['session_id']}").json()["cached_tokens"] >= created["cached_tokens"]
        assert http.delete(f"/v1/context/{created['session_id']}").status_code == 200
        assert all(n == 0 for n in pinned_on(http).values())


def test_another_ingress_load_on_a_replica_steers_this_router_away(cluster):
    """A request another ingress sent (its ticket names another source, and it is sent straight
    to one replica, outside this router's books) shows in that replica's reports, and this
    router's prompts go to the idle replicas meanwhile."""
    from promptcache.engine.api import CacheOptions, Request, SamplingParams
    from promptcache.scaleout.book import Ticket

    client, book = client_of(cluster.base_url), cluster.book
    model = client.models.list().data[0].id
    busy = book.roster()[0]
    request = Request("elsewhere-1", list(range(300, 400)), SamplingParams(max_tokens=1800, ignore_eos=True),
                      CacheOptions())
    stream = cluster.handle.options(stream=True).generate.remote(
        request, Ticket("elsewhere-1", target=busy, admin=True, source="another-ingress"))
    try:
        assert next(iter(stream)) == busy
        poke = lambda: client.completions.create(model=model, prompt="x", max_tokens=1)  # noqa: E731
        wait_until(lambda: book.snapshot()[busy]["others_load_tokens"] > 0, "the busy replica's report", 30, poke)
        assert book.snapshot()[busy]["in_flight"] == 0  # not this router's request
        for i in range(4):
            reply = client.completions.create(model=model, prompt=f"Where to, {i}? " * 6, max_tokens=1)
            assert book.where(reply.id)[0] != busy
    finally:
        stream.cancel()


def test_stats_and_flush_cover_every_replica(cluster):
    client = client_of(cluster.base_url)
    model = client.models.list().data[0].id
    for i in range(3):  # misses at low load rotate: each replica caches one
        client.completions.create(model=model, prompt=f"Spread {i} over the replicas. " * 8, max_tokens=1)
    with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
        stats = http.get("/v1/cache/stats").json()
        per = stats["replicas"]
        assert len(per) == 3 and all(r["blocks_held"] > 0 for r in per.values())
        for field in ("blocks_held", "lookups", "insertions"):
            assert stats[field] == sum(r[field] for r in per.values())
        assert stats["block_size"] == 16
        flushed = http.post("/v1/cache/flush", json={}).json()["flushed_blocks"]
        after = http.get("/v1/cache/stats").json()
    assert flushed >= 3 and after["blocks_held"] == 0  # nothing is pinned here: every block went


def test_each_replica_has_the_cpus_it_was_given(cluster):
    from cluster_settings import REPLICA_CPUS

    info = cluster.handle.describe.remote().result(timeout_s=CLIENT_TIMEOUT_S)
    assert info["cpus"] == REPLICA_CPUS and info["threads"] == 1


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


def test_a_prefix_one_replica_computed_is_read_from_redis_by_the_other(cluster, tiny_llama_dir, tmp_path_factory):
    """Runs next to last (the kill test then runs on its two replicas): it replaces the module's
    replicas with two over one real redis-server (the tiers tests' fixture), on the same Ray
    and behind the same ingress. Round-robin sends the
    same prompt to one replica, then to the other, which restores the prefix from Redis.

    The tiers' planner (tiers/planner.py) fetches only when it predicts that beats recomputing,
    which for the tiny model it seldom does; but before a replica has measured any prefill it
    fetches every prefix it finds (docs/tiers.md), and the second replica's first request is
    this one. That documented rule is what makes the read happen here, with no setting."""
    from dataclasses import replace

    from ray import serve
    from redis_servers import RedisServer, need_redis

    from promptcache.cache.keys import Namespace, block_keys
    from promptcache.scaleout.launch import APP, ScaleOut, deploy
    from promptcache.scaleout.shared import SharedBlocks
    from promptcache.server.chat import prompt_from_completion
    from promptcache.server.core.usage import reusable_prefix
    from promptcache.tiers.redis_store import RedisStore

    need_redis()
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        settings = replace(cluster.settings, redis_url=redis.url)
        old = set(cluster.book.roster())
        deploy(settings, ScaleOut(replicas=2, num_cpus=2, stats_period_s=0.5, stale_after_s=10.0,
                                  replica_cpus=0.25))  # fits beside the old replicas while they stop

        def replaced() -> bool:
            status = serve.status().applications[APP].deployments
            running = sum(d.replica_states.get("RUNNING", 0) for d in status.values())
            roster = set(cluster.book.roster())
            return running == 2 and len(roster) == 2 and not roster & old

        wait_until(replaced, "two replicas over Redis", 120)
        engine = cluster.app.state.promptcache.engine
        prompt = "A prefix that travels between replicas through Redis. " * 6
        tokens = prompt_from_completion(engine.tokenizer, prompt)
        keys = block_keys(tokens, 16, Namespace(engine.model_id, "default", None))[:reusable_prefix(len(tokens), 16) // 16]
        shared = SharedBlocks(RedisStore(redis.url, prefix=settings.tier_config().redis_prefix))
        cluster.book.mode = "round-robin"
        body = {"model": engine.model_name, "prompt": prompt, "max_tokens": 8, "temperature": 0}
        with httpx.Client(base_url=cluster.url, timeout=CLIENT_TIMEOUT_S) as http:
            first = http.post("/v1/completions", json=body)
            assert first.status_code == 200, first.text
            wait_until(lambda: shared.leading(keys) == len(keys), "the first replica's blocks in Redis", 30)
            second = http.post("/v1/completions", json=body)
        assert second.status_code == 200, second.text
        one, two = first.json(), second.json()
        assert cluster.book.where(one["id"])[0] != cluster.book.where(two["id"])[0]
        assert one["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        restored = two["usage"]["prompt_tokens_details"]["cached_tokens"]
        # All of it: every full block of the prompt was in Redis before the second request (a
        # read past the tier's first deadline, 1 s for a few local blocks, would be a defect too).
        assert restored == len(keys) * 16 > 0
        tiers = dict(part.split("=") for part in second.headers["x-cache-tiers"].split(";"))
        assert {tier: int(n) for tier, n in tiers.items() if int(n)} == {"redis": restored}  # all from Redis
        assert two["choices"][0]["text"] == one["choices"][0]["text"]  # greedy: restored KV, the same reply
    finally:
        cluster.book.mode = "prefix"
        redis.stop()


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
    for count, t in enumerate(threads, 1):  # one after the other: the second follows the first's cache key
        t.start()
        wait_until(lambda: sum(r["in_flight"] for r in book.snapshot().values()) == count, "routed", 60)
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
