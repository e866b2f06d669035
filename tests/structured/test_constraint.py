"""Token masks: every output the masks allow is valid, and a mask touches only its own row.

The property test draws JSON schemas from the supported subset (bounded, so every walk ends)
and walks the grammar with random logits: each step samples greedily from seeded noise under
the mask, exactly as the engine applies it. Whatever the walk produces must parse and validate.
"""

from __future__ import annotations

import json

import jsonschema
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcache.engine.structured.constraint import Constraint, MaskBatch, allowed, apply_mask
from promptcache.engine.structured.spec import StructureSpec

MAX_STEPS = 400

names = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
leaves = st.one_of(
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.integers(-50, 50).map(lambda lo: {"type": "integer", "minimum": lo, "maximum": lo + 500}),
    st.integers(0, 8).map(lambda n: {"type": "string", "maxLength": n}),
    st.lists(names, min_size=1, max_size=4, unique=True).map(lambda xs: {"enum": xs}),
)


def _containers(children):
    arrays = children.map(lambda s: {"type": "array", "items": s, "maxItems": 3})
    objects = st.dictionaries(names, children, min_size=1, max_size=3).flatmap(
        lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
            lambda req: {"type": "object", "properties": props, "required": req, "additionalProperties": False}))
    return arrays | objects


schemas = st.recursive(leaves, _containers, max_leaves=6)


def walk(constraint: Constraint, vocab_size: int, seed: int, batch: MaskBatch) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    tokens = []
    for _ in range(MAX_STEPS):
        if constraint.finished:
            return tokens
        mask = batch.wait(batch.start([constraint]))[0]
        logits = torch.randn(1, vocab_size, generator=generator)
        token = int(apply_mask(logits, mask).argmax())
        assert constraint.accept(token), constraint.error
        tokens.append(token)
    raise AssertionError("the grammar did not finish")


_BATCH: list[MaskBatch] = []


def mask_batch(vocab_size: int) -> MaskBatch:
    """One worker for the whole module: a MaskBatch owns a thread."""
    if not _BATCH:
        _BATCH.append(MaskBatch(vocab_size))
    return _BATCH[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas, seed=st.integers(0, 2**31))
def test_every_walk_under_a_schema_mask_is_valid_json_for_it(tokenizer, compiler, schema, seed):
    compiled = compiler.compile(StructureSpec("json_schema", json.dumps(schema)))
    eos = set(tokenizer.eos_token_ids)
    tokens = walk(Constraint(compiled), tokenizer.vocab_size, seed, mask_batch(tokenizer.vocab_size))
    text = tokenizer.decode([t for t in tokens if t not in eos])
    jsonschema.validate(json.loads(text), schema)


def test_choice_and_regex_masks_allow_exactly_their_language(tokenizer, compiler):
    batch = mask_batch(tokenizer.vocab_size)
    for spec, valid in [(StructureSpec("choice", '["yes", "no"]'), {"yes", "no"}),
                        (StructureSpec("regex", "[0-9]{3}"), None)]:
        for seed in range(5):
            tokens = walk(Constraint(compiler.compile(spec)), tokenizer.vocab_size, seed, batch)
            text = tokenizer.decode([t for t in tokens if t not in tokenizer.eos_token_ids])
            assert text in valid if valid else (len(text) == 3 and text.isdigit())


def test_a_mask_changes_only_its_own_row_and_keeps_greedy_within_it(tokenizer, compiler):
    compiled = compiler.compile(StructureSpec("choice", '["no"]'))
    batch = mask_batch(tokenizer.vocab_size)
    masks = batch.wait(batch.start([None, Constraint(compiled), None]))
    logits = torch.randn(3, tokenizer.vocab_size, generator=torch.Generator().manual_seed(0))
    assert allowed(masks[0], tokenizer.vocab_size).all() and allowed(masks[2], tokenizer.vocab_size).all()
    masked = apply_mask(logits[1:2], masks[1])
    ok = allowed(masks[1], tokenizer.vocab_size)
    assert torch.equal(masked[0, ok], logits[1, ok])  # allowed logits untouched, bitwise
    assert int(masked.argmax()) == int(torch.where(ok, logits[1], -torch.inf).argmax())
    assert {tokenizer.decode([int(i)]) for i in ok.nonzero()} <= {"n", "no"}
