"""Constrained decoding inside the engine: replies follow their grammar, stop when it is
complete, say "length" when cut inside it, and never change another row's result."""

from __future__ import annotations

import json

import jsonschema
import pytest

from promptcache.engine.api import CacheOptions, Request, SamplingParams
from promptcache.engine.engine import Engine
from promptcache.engine.structured.spec import StructureSpec
from tests.engine.helpers import tiny_engine

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0,
                                                                              "maximum": 150}}}


def run(engine: Engine, requests: list[Request]) -> dict[str, tuple[str, str | None, list[int]]]:
    for request in requests:
        engine.add_request(request)
    texts = {r.request_id: "" for r in requests}
    ids = {r.request_id: [] for r in requests}
    reasons = {}
    while engine.has_unfinished():
        for out in engine.step():
            texts[out.request_id] += out.new_text
            ids[out.request_id] += out.new_token_ids
            if out.finished:
                reasons[out.request_id] = out.finish_reason
    return {rid: (texts[rid], reasons.get(rid), ids[rid]) for rid in texts}


def request(engine: Engine, rid: str, prompt: str, spec: StructureSpec | None = None, *, max_tokens: int = 64,
            cache: bool = True) -> Request:
    structure = engine.grammars.compile(spec) if spec is not None else None
    return Request(rid, engine.tokenizer.encode(prompt), SamplingParams(max_tokens=max_tokens),
                   CacheOptions(enabled=cache), structure=structure)


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return tiny_engine(tiny_llama_dir)


def test_a_schema_constrained_reply_validates_and_stops_when_complete(engine):
    spec = StructureSpec("json_schema", json.dumps(PERSON))
    text, reason, _ = run(engine, [request(engine, "a", "Describe Alice as JSON:", spec, max_tokens=200)])["a"]
    assert reason == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_a_reply_cut_by_max_tokens_inside_the_structure_says_length(engine):
    spec = StructureSpec("json_schema", json.dumps(PERSON))
    text, reason, ids = run(engine, [request(engine, "a", "Describe Alice as JSON:", spec, max_tokens=3)])["a"]
    assert reason == "length" and len(ids) == 3 and text.startswith("{")


def test_a_constrained_row_never_changes_its_neighbours(engine):
    prompts = ["The quick brown fox", "Once upon a time", "Alice is 30 years old."]
    alone = {p: run(engine, [request(engine, "x", p, max_tokens=12)])["x"] for p in prompts}
    spec = StructureSpec("choice", json.dumps(["yes", "no", "maybe"]))
    batch = [request(engine, f"free{i}", p, max_tokens=12) for i, p in enumerate(prompts)]
    batch.insert(1, request(engine, "choice", "Is it raining?", spec, max_tokens=12))
    together = run(engine, batch)
    for i, p in enumerate(prompts):
        assert together[f"free{i}"] == alone[p]
    assert together["choice"][0] in {"yes", "no", "maybe"} and together["choice"][1] == "stop"


def test_constrained_greedy_output_is_the_same_with_the_cache_on_and_off(engine):
    spec = StructureSpec("json_schema", json.dumps(PERSON))
    prompt = "You are a careful assistant that writes records. " * 12 + "Describe Bob as JSON:"
    cold = run(engine, [request(engine, "cold", prompt, spec, max_tokens=80, cache=False)])["cold"]
    run(engine, [request(engine, "warm-up", prompt, spec, max_tokens=80)])
    warm_req = request(engine, "warm", prompt, spec, max_tokens=80)
    engine.add_request(warm_req)
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    assert outputs[-1].num_cached_tokens > 0
    assert "".join(o.new_text for o in outputs if o.request_id == "warm") == cold[0]
