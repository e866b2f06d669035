"""OpenAI's presence_penalty, frequency_penalty and logit_bias, and vLLM's repetition_penalty and
min_p, through the live server and the official client: each reaches the engine as sent (the
reply is a second engine's own for the same parameters) and changes the reply; bad values are a
400 naming the field. Tiny model, the module's tiny server."""

from __future__ import annotations

import openai
import pytest

from promptcache.engine.api import INT64_MAX, INT64_MIN, SamplingParams
from promptcache.server.app import engine_from_settings

PROMPT = list(range(1000, 1040))  # token ids: greedy repeats itself within 24 tokens on it
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def server(tiny_server):
    return tiny_server


@pytest.fixture(scope="module")
def reference(server):
    """A second engine with the server's weights and numerics, stepped here."""
    return engine_from_settings(server.settings)


def served(server, **fields) -> str:
    extra = {name: fields.pop(name) for name in ("repetition_penalty", "min_p") if name in fields}
    reply = server.client().completions.create(model=server.model, prompt=PROMPT, max_tokens=MAX_TOKENS,
                                               extra_body={"ignore_eos": True, **extra}, **fields)
    return reply.choices[0].text


def expected(reference, **fields) -> str:
    if "logit_bias" in fields:
        fields["logit_bias"] = tuple(sorted((int(k), float(v)) for k, v in fields["logit_bias"].items()))
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True, **{"temperature": 0.0, **fields})
    return reference.generate([PROMPT], params)[0].text


def first_token(reference) -> int:
    return reference.generate([PROMPT], SamplingParams(max_tokens=1))[0].token_ids[0]


@pytest.mark.parametrize("fields", [
    {"frequency_penalty": 2.0},
    {"presence_penalty": 1.5, "frequency_penalty": -0.5},
    {"repetition_penalty": 2.0},
    {"logit_bias": "the first greedy token"},
    {"temperature": 1.0, "seed": 3, "min_p": 0.2, "presence_penalty": 0.5},
], ids=["frequency", "presence", "repetition", "logit_bias", "min_p"])
def test_each_field_reaches_the_engine_and_changes_the_reply(server, reference, fields):
    if fields.get("logit_bias"):
        fields = {"logit_bias": {str(first_token(reference)): -100}}
    plain = served(server, temperature=0)
    assert plain == expected(reference)
    reply = served(server, **{"temperature": 0, **fields})
    assert reply == expected(reference, **fields)
    assert reply != plain


def test_chat_takes_the_official_clients_fields(server):
    reply = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, presence_penalty=1.0,
        frequency_penalty=0.5, logit_bias={"7": 5, "49151": -100})
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("fields, param", [
    ({"logit_bias": {"49152": 1}}, "logit_bias"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"extra_body": {"repetition_penalty": 11}}, "repetition_penalty"),
])
def test_bad_values_are_a_400_naming_the_field(server, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model=server.model, messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=2, **fields)
    assert err.value.body["param"] == param


def test_choices_of_the_largest_seed_wrap_around_to_the_smallest(server):
    """Choice j is the single request with seed + j, within int64: after INT64_MAX, INT64_MIN."""
    client = server.client()
    both = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, temperature=1.0, n=2,
                                      seed=INT64_MAX)
    last = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, temperature=1.0,
                                     seed=INT64_MIN)
    assert both.choices[1].text == last.choices[0].text
