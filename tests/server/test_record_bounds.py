"""Records bounded per tenant (issue 25, item 4), on the tiny model behind live servers.

Each finding of the audit is reproduced: Responses metadata at OpenAI's limits and stored
responses under a per-tenant count and byte quota; pins under the record cap; the start-up
restore bounded by the cap and answering requests while it runs; sessions counted and inserted
in one step; a PATCH racing a DELETE never bringing the session back. Races are made
deterministic by driving the store and the session code with a fixed interleaving, and by
concurrent requests whose outcome is the same whatever their order."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from live_server import start_server

from promptcache.server.admin import pin_owner
from promptcache.server.context import sessions
from promptcache.server.core.records import Record, SqliteRecords
from promptcache.server.errors import APIError
from promptcache.server.openai.responses.store import SqliteResponseStore, StoredResponse
from promptcache.server import retention
from promptcache.server.retention import leases
from promptcache.server.settings import build_settings

KEYS = {"key-alice": {"tenant": "alice"}, "key-bob": {"tenant": "bob"}}
CAP = 4  # max_records_per_tenant of these servers
PREFIX = [1] + list(range(100, 140))  # 41 token ids: two full blocks of 16


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bounds") / "keys.json"
    path.write_text(json.dumps(KEYS))
    return path


@pytest.fixture(scope="module")
def server(tiny_llama_dir, keys_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounds-db")
    settings = build_settings(dict(model=str(tiny_llama_dir), default_max_tokens=1, admin_key="key-admin",
                                   records_db=str(tmp / "records.sqlite3"), responses_db=str(tmp / "responses.sqlite3"),
                                   max_records_per_tenant=CAP, max_stored_responses_per_tenant=2,
                                   max_queue=64, max_requests_per_tenant=64), keys_file=keys_file)
    live = start_server(settings)
    yield live
    live.stop()


def state_of(server):
    return server.server.config.app.state.promptcache


def create_session(server, key="key-alice", prompt=PREFIX) -> httpx.Response:
    return httpx.post(server.url + "/v1/context", json={"model": server.model, "prompt": prompt, "ttl": 600},
                      headers=auth(key), timeout=60)


def drop_sessions(server, key: str) -> None:
    for found in httpx.get(server.url + "/v1/context", headers=auth(key)).json()["data"]:
        httpx.delete(server.url + f"/v1/context/{found['id']}", headers=auth(key))


# ---------------------------------------------------------------- Responses


def test_metadata_past_openais_limits_is_a_400(server):
    client = server.client("key-alice")
    too_big = [{str(i): "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513},
               {"k": "v" * 7 * 2**20}]  # the audit's 7 MB map (under the 8 MiB body limit)
    for metadata in too_big:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model=server.model, input="hi", max_output_tokens=1, metadata=metadata)
        assert refused.value.body["param"] == "metadata"
    at_limit = {f"key{i:02}" + "k" * 59: "v" * 512 for i in range(16)}
    reply = client.responses.create(model=server.model, input="hi", max_output_tokens=1, metadata=at_limit)
    assert client.responses.retrieve(reply.id).metadata == at_limit


def test_a_tenants_stored_responses_are_capped_oldest_first(server):
    alice, bob = server.client("key-alice"), server.client("key-bob")
    kept_by_bob = bob.responses.create(model=server.model, input="bob's", max_output_tokens=1)
    made = [alice.responses.create(model=server.model, input=f"turn {i}", max_output_tokens=1) for i in range(4)]
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(made[1].id)  # the cap is 2: her two oldest are gone
    assert [alice.responses.retrieve(r.id).id for r in made[2:]] == [r.id for r in made[2:]]
    assert bob.responses.retrieve(kept_by_bob.id).id == kept_by_bob.id  # another tenant's are untouched


def test_the_byte_quota_evicts_the_tenants_oldest_until_the_new_one_fits():
    now = [0.0]
    store = SqliteResponseStore(":memory:", ttl_s=600, clock=lambda: now[0], max_bytes_per_tenant=3000)

    def put(tenant: str, rid: str, chars: int) -> None:
        now[0] += 1
        store.put(StoredResponse(rid, tenant, {"text": "x" * chars}, [], []))

    put("bob", "b1", 2000)
    for i in range(3):
        put("alice", f"a{i}", 1000)  # ~1,015 bytes each: the third evicts the first
    assert [store.get("alice", f"a{i}") is not None for i in range(3)] == [False, True, True]
    put("alice", "huge", 5000)  # over the quota alone: kept alone
    assert [store.get("alice", r) is not None for r in ("a1", "a2", "huge")] == [False, False, True]
    assert store.get("bob", "b1") is not None


def test_a_store_file_from_before_the_quota_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE responses (id TEXT NOT NULL, tenant TEXT NOT NULL, expires_at REAL NOT NULL, "
                   "response TEXT NOT NULL, input_items TEXT NOT NULL, history TEXT NOT NULL, PRIMARY KEY (tenant, id))")
        db.execute("INSERT INTO responses VALUES ('old', 'alice', 100, '{\"a\": 1}', '[]', '[]')")
    store = SqliteResponseStore(path, ttl_s=60, clock=lambda: 10.0, max_per_tenant=1)
    assert store.get("alice", "old").response == {"a": 1}
    store.put(StoredResponse("new", "alice", {}, [], []))
    assert store.get("alice", "old") is None and store.get("alice", "new") is not None


# ------------------------------------------------------------------- records


def test_the_cap_is_counted_and_claimed_in_one_step(tmp_path):
    """The audit's race: every creation counted before any inserted. A claim now inserts as it
    counts, so the second of two creations in flight is refused before either's prefill."""
    one, two = SqliteRecords(tmp_path / "r.sqlite3"), SqliteRecords(tmp_path / "r.sqlite3")
    for i in range(CAP - 1):
        assert one.add(Record("session", "alice", f"s{i}", {}), CAP)
    assert one.add(Record("session", "alice", "first", {}), CAP)  # claimed; its prefill not run yet
    assert not two.add(Record("session", "alice", "second", {}), CAP)
    assert one.add(Record("session", "alice", "first", {"tokens": [1]}), CAP)  # its own place: not counted twice
    assert two.add(Record("session", "bob", "other", {}), CAP)  # another tenant's count
    with ThreadPoolExecutor(8) as pool:
        claimed = list(pool.map(lambda i: (one, two)[i % 2].add(Record("pin", "alice", f"p{i}", {}), CAP), range(40)))
    assert sum(claimed) == CAP and len(one.list("pin", "alice")) == CAP


def test_concurrent_session_creations_stop_at_the_cap(server):
    assert create_session(server).status_code == 200
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda _: create_session(server), range(12)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [200] * (CAP - 1) + [429] * (12 - CAP + 1), [r.text for r in replies if r.status_code != 200]
    assert {r.json()["error"]["code"] for r in replies if r.status_code == 429} == {"too_many_records"}
    assert len(httpx.get(server.url + "/v1/context", headers=auth("key-alice")).json()["data"]) == CAP
    drop_sessions(server, "key-alice")


def test_concurrent_cached_contents_stop_at_the_cap(server):
    base = server.url + "/v1beta/cachedContents"
    body = {"model": f"models/{server.model}", "ttl": "600s",
            "contents": [{"role": "user", "parts": [{"text": "A handbook to keep. " * 4}]}]}
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: httpx.post(base, json=body, headers=auth("key-bob"), timeout=60), range(8)))
    assert sorted(r.status_code for r in replies) == [200] * CAP + [429] * (8 - CAP), [r.text for r in replies]
    listed = httpx.get(base, headers=auth("key-bob")).json()["cachedContents"]
    assert len(listed) == CAP
    for cached in listed:
        assert httpx.delete(f"{server.url}/v1beta/{cached['name']}", headers=auth("key-bob")).status_code == 200


def test_an_update_never_brings_a_deleted_record_back(tmp_path):
    store = SqliteRecords(tmp_path / "r.sqlite3")
    store.put(Record("session", "alice", "s1", {"ttl_s": 60}))
    read = store.get("session", "alice", "s1")
    assert store.delete("session", "alice", "s1")
    assert not store.update(replace(read, data={"ttl_s": 120}))
    assert store.get("session", "alice", "s1") is None


def test_a_patch_that_lost_to_a_delete_is_a_404_and_the_session_stays_gone(server):
    sid = create_session(server).json()["session_id"]
    state = state_of(server)
    read = sessions.records(state).get(sessions.KIND, "alice", sid)  # the PATCH has read the session...
    assert httpx.delete(server.url + f"/v1/context/{sid}", headers=auth("key-alice")).status_code == 200
    with pytest.raises(APIError) as lost:  # ...and writes its new TTL after the DELETE
        asyncio.run(sessions.put_ttl(state, read, 120.0))
    assert lost.value.status == 404
    assert httpx.get(server.url + f"/v1/context/{sid}", headers=auth("key-alice")).status_code == 404
    assert server.engine.retained_blocks(sessions.owner_of("alice", sid)) == 0


def test_patches_racing_deletes_leave_every_deleted_session_deleted(server):
    made = [create_session(server, "key-bob").json()["session_id"] for _ in range(CAP)]

    def race(sid: str) -> None:
        url = server.url + f"/v1/context/{sid}"
        with ThreadPoolExecutor(2) as pair:
            pair.submit(httpx.patch, url, json={"ttl": 900}, headers=auth("key-bob"))
            pair.submit(httpx.delete, url, headers=auth("key-bob"))

    with ThreadPoolExecutor(CAP) as pool:
        list(pool.map(race, made))
    assert httpx.get(server.url + "/v1/context", headers=auth("key-bob")).json()["data"] == []
    assert all(server.engine.retained_blocks(sessions.owner_of("bob", sid)) == 0 for sid in made)


def test_pins_count_under_the_record_cap(server):
    def pin(salt: str, path: str = "/v1/cache/pin") -> httpx.Response:
        return httpx.post(server.url + path, json={"prompt": PREFIX, "cache_salt": salt}, headers=auth("key-alice"),
                          timeout=60)

    assert all(pin(f"salt-{i}").status_code == 200 for i in range(CAP))
    refused = pin("one-more")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_records"
    assert pin("salt-0").status_code == 200  # the same prefix again: the same record, not counted twice
    assert pin("salt-0", "/v1/cache/unpin").status_code == 200
    assert pin("one-more").status_code == 200
    for i in range(1, CAP):
        pin(f"salt-{i}", "/v1/cache/unpin")
    pin("one-more", "/v1/cache/unpin")


def test_the_restore_is_bounded_and_serves_while_it_runs(tiny_llama_dir, keys_file, tmp_path):
    db = tmp_path / "records.sqlite3"
    settings = build_settings(dict(model=str(tiny_llama_dir), records_db=str(db), restore_retained=True,
                                   max_records_per_tenant=2), keys_file=keys_file)
    from promptcache.server.app import engine_from_settings

    engine = engine_from_settings(settings)
    store = SqliteRecords(db)
    owners = [pin_owner("alice", f"salt-{i}", PREFIX) for i in range(3)]  # one more than the cap
    for i, owner in enumerate(owners):
        store.put(Record("pin", "alice", owner, {"owner": owner, "tokens": PREFIX, "salt": f"salt-{i}",
                                                 "model_id": engine.model_id}))
    with engine._lock:  # the engine cannot step: a restore that blocked start-up would never start serving
        server = start_server(settings, engine)
        try:
            assert httpx.get(server.url + "/v1/models", headers=auth("key-alice")).status_code == 200
            assert not leases(state_of(server)).restored.is_set()
        except BaseException:
            server.stop()
            raise
    try:
        assert leases(state_of(server)).restored.wait(timeout=120)
        assert [engine.retained_blocks(owner) for owner in sorted(owners)] == [2, 2, 0]  # in id order, up to the cap
    finally:
        server.stop()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "delete", "update"]), st.integers(0, 5)), max_size=30))
def test_any_sequence_of_claims_deletes_and_updates_keeps_the_cap_and_the_dead_dead(ops):
    """Any interleaving of creations, deletions and updates, against a set of live ids as the
    model: never more than the cap, and an update never brings back what a delete took."""
    store = SqliteRecords(":memory:")
    live: set[str] = set()
    for op, n in ops:
        rid = f"s{n}"
        record = Record("session", "alice", rid, {"n": n})
        if op == "add":
            allowed = rid in live or len(live) < CAP
            assert store.add(record, CAP) == allowed
            live |= {rid} if allowed else set()
        elif op == "delete":
            assert store.delete("session", "alice", rid) == (rid in live)
            live.discard(rid)
        else:
            assert store.update(record) == (rid in live)
        assert [r.id for r in store.list("session", "alice")] == sorted(live)


def test_a_session_deleted_while_it_is_restored_leaves_no_pin(server, monkeypatch):
    sid = create_session(server).json()["session_id"]
    owner = sessions.owner_of("alice", sid)
    server.engine.release_retained(owner)  # as after a restart: the next use restores it
    restore = retention.restore

    async def deleted_first(*args, **kwargs):  # the DELETE lands between the read and the restore
        assert sessions.records(state_of(server)).delete(sessions.KIND, "alice", sid)
        return await restore(*args, **kwargs)

    monkeypatch.setattr(retention, "restore", deleted_first)
    assert httpx.get(server.url + f"/v1/context/{sid}", headers=auth("key-alice")).status_code == 404
    assert server.engine.retained_blocks(owner) == 0
