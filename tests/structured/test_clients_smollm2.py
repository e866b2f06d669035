"""The clients agents and evaluations are built on, against a live server on the embedded
SmolLM2 in the serving default: the official openai client's parse, langchain-openai's
structured output (all three methods) and forced tool binding, and openai-agents with a
function tool under tool_choice="required".

What is asserted is what the decoder guarantees on every CPU: the reply parses into the
requested type or call. Which values the model chooses is left to its margins.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from live_server import start_server  # noqa: E402

from promptcache.server.settings import ServerSettings  # noqa: E402

EXTRACT = "Extract the person as JSON with keys name and age: Alice is 30 years old."


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def server(serving_engine):
    live = start_server(ServerSettings(default_max_tokens=64), engine=serving_engine)
    yield live
    live.stop()


def test_openai_parse(server):
    completion = server.client().chat.completions.parse(
        model=server.model, messages=[{"role": "user", "content": EXTRACT}], response_format=Person, temperature=0)
    assert isinstance(completion.choices[0].message.parsed, Person)


@pytest.fixture(scope="module")
def chat_model(server):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=server.model, base_url=server.base_url, api_key="unused", temperature=0, max_tokens=60,
                      max_retries=0)


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_structured_output(chat_model, method):
    assert isinstance(chat_model.with_structured_output(Person, method=method).invoke(EXTRACT), Person)


def test_langchain_bind_tools_with_a_forced_choice(chat_model):
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return "18 C and sunny"

    message = chat_model.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)


def test_openai_agents_calls_a_function_tool_when_required(server):
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    called = []

    @function_tool
    def weather(city: str) -> str:
        """Current weather for a city."""
        called.append(city)
        return f"18 C and sunny in {city}"

    client = AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    # A 135M model called again after the result rather than answer, so the run ends with the
    # tool's output: the round trip is the model's call, its parse, and the tool's execution.
    agent = Agent(name="weather", instructions="Answer weather questions with the weather tool.", tools=[weather],
                  model=OpenAIChatCompletionsModel(model=server.model, openai_client=client),
                  model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=60),
                  tool_use_behavior="stop_on_first_tool")
    result = Runner.run_sync(agent, "What is the weather in Paris?", max_turns=2)
    assert len(called) == 1 and result.final_output == f"18 C and sunny in {called[0]}"
