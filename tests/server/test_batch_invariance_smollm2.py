"""Batch invariance through the live server, on the real model in the serving default: 8
concurrent clients with shared system prompts get the replies each gets alone with the cache
off, twice: checked to have shared the engine's steps (batches of more than one), and the
second round to have read the system prompts from the cache. Prefill chunks of 128 tokens run
beside decodes as the requests arrive (not checked: the order is the scheduler's)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from live_server import start_server

from promptcache.server.settings import ServerSettings

pytestmark = pytest.mark.slow

SYSTEMS = [
    "You are a careful assistant for a hardware shop. Answer briefly. " * 12,
    "You are a travel agent who knows every European railway timetable by heart. " * 20,
]
QUESTIONS = ["Name a tool.", "What is a hammer for?", "Which city has the most trains?", "Name a colour.",
             "Give me one tip.", "What is 2 + 2?", "Name a river.", "Say hello."]
# Half the clients decode with penalties and a bias (applied to each row alone): invariant too.
PENALTIES = {"frequency_penalty": 1.0, "presence_penalty": 0.5, "logit_bias": {"28": -5, "30": 3}}


@pytest.fixture(scope="module")
def server():
    live = start_server(ServerSettings(model=None, max_batch_size=8, prefill_chunk=128))
    yield live
    live.stop()


def _ask(server, i: int, *, cached: bool) -> tuple[str, int]:
    messages = [{"role": "system", "content": SYSTEMS[i % 2]}, {"role": "user", "content": QUESTIONS[i]}]
    reply = server.client().chat.completions.create(
        model=server.model, messages=messages, max_tokens=16, temperature=0,
        extra_body={"ignore_eos": True, "caching": {"enabled": cached}}, **(PENALTIES if i % 4 >= 2 else {}),
    )
    return reply.choices[0].message.content, reply.usage.prompt_tokens_details.cached_tokens


def test_concurrent_clients_get_the_replies_they_get_alone(server, monkeypatch):
    alone = [_ask(server, i, cached=False) for i in range(len(QUESTIONS))]
    assert all(hit == 0 for _, hit in alone)
    engine, batches = server.engine, []
    real_step = engine.step

    def step():  # the sizes of the batches the concurrent requests ran in
        outputs = real_step()
        batches.append(len(outputs))
        return outputs

    monkeypatch.setattr(engine, "step", step)
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda i: _ask(server, i, cached=True), range(len(QUESTIONS))))
        again = list(pool.map(lambda i: _ask(server, i, cached=True), range(len(QUESTIONS))))  # warm now
    assert [text for text, _ in together] == [text for text, _ in alone]
    assert [text for text, _ in again] == [text for text, _ in alone]
    assert max(batches) > 1, "the concurrent requests never shared a step"
    assert all(hit > 0 for _, hit in again)  # and the second round read the system prompts from the cache
