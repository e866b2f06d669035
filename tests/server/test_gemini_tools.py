"""The Gemini dialect's function calling, structured output and countTokens, through the
official google-genai client against a live server on the tiny random-weight model: the
grammar forces every reply's shape, so a random model's output still proves it.

A function tool round trip (mode ANY forces a functionCall whose args follow the declaration;
the functionResponse goes back and turn 2's prompt extends turn 1's, read from the cache), the
stream's functionCall parts, NONE and allowedFunctionNames, a Pydantic `response_schema` parsed
by the client, text/x.enum, countTokens equal to a generation's promptTokenCount, tools kept in
a cached content, and bad tool and schema fields as 400 INVALID_ARGUMENT.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from google import genai
from google.genai import types
from google.genai.errors import ClientError
from pydantic import BaseModel, Field

from promptcache.server.chat import ChatRenderer
from promptcache.server.gemini.schema import GenerateContentRequest
from promptcache.server.gemini.tools import plan, turns
from promptcache.server.structured import tools as generic

WEATHER = types.FunctionDeclaration(
    name="get_weather", description="The current weather in a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                            "required": ["city"], "additionalProperties": False})
TIME = types.FunctionDeclaration(
    name="get_time", description="The local time in a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING", max_length=12)},
                            required=["city"]))
TOOLS = [types.Tool(function_declarations=[WEATHER, TIME])]
QUESTION = [types.Content(role="user", parts=[types.Part.from_text(text="What is the weather in Paris?")])]


class City(BaseModel):
    name: str = Field(max_length=12)
    sunny: bool
    rating: int = Field(ge=0, le=9)


@pytest.fixture(scope="module")
def server(tiny_server):
    return tiny_server


@pytest.fixture(scope="module")
def client(server):
    return genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=server.url, api_version="v1beta"))


def config(mode: str = "ANY", names: list[str] | None = None, **kw) -> types.GenerateContentConfig:
    """Room for the most parallel calls the grammar allows, so every call closes."""
    kw.setdefault("max_output_tokens", 400)
    calling = types.FunctionCallingConfig(mode=mode, allowed_function_names=names)
    return types.GenerateContentConfig(
        tools=TOOLS, tool_config=types.ToolConfig(function_calling_config=calling), temperature=0,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True), **kw)


def rendered(server, contents: list[types.Content]):
    """The prompt the server renders for `contents` with TOOLS, from the server's own parts."""
    dump = lambda value: value.model_dump(mode="json", by_alias=True, exclude_none=True)  # noqa: E731
    body = GenerateContentRequest.model_validate({"contents": [dump(c) for c in contents],
                                                  "tools": [dump(t) for t in TOOLS]})
    renderer = ChatRenderer(server.engine.tokenizer)
    structure = plan(renderer, body.tools, None, None)
    return renderer.render(turns(structure, None, body.contents), structure.template_tools)


def raw(server, model: str, body: dict, method: str = "generateContent") -> httpx.Response:
    return httpx.post(f"{server.url}/v1beta/models/{model}:{method}", json=body, timeout=60)


def test_a_function_round_trip_extends_the_call_and_reads_turn_one_from_the_cache(server, client):
    first = client.models.generate_content(model=server.model, contents=QUESTION, config=config())
    calls = first.function_calls
    assert calls and first.candidates[0].finish_reason == "STOP" and first.text is None
    schemas = {"get_weather": WEATHER.parameters_json_schema,
               "get_time": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                            "required": ["city"]}}
    for call in calls:
        jsonschema.validate(call.args, schemas[call.name])
    answer = types.Content(role="user", parts=[
        types.Part.from_function_response(name=c.name, response={"result": "18 C"}) for c in calls])
    turn2 = [*QUESTION, first.candidates[0].content, answer]
    second = client.models.generate_content(model=server.model, contents=turn2,
                                            config=config("NONE", max_output_tokens=4))
    assert second.function_calls is None and second.candidates[0].content.parts[0].text is not None
    # The call is rendered back as the grammar had the model write it: turn 2 extends turn 1.
    written = generic.assistant_text([generic.ToolCall(c.name, c.args) for c in calls], None)
    prompt1, prompt2 = rendered(server, QUESTION), rendered(server, turn2)
    assert prompt2.text.startswith(prompt1.text + written)
    assert len(prompt1.tokens) == first.usage_metadata.prompt_token_count
    assert second.usage_metadata.cached_content_token_count >= len(prompt1.tokens) // 16 * 16
    counted = client.models.count_tokens(model=server.model, contents=QUESTION).total_tokens
    assert counted < len(prompt1.tokens)  # the tool list is part of a tool request's prompt, not of bare contents


def test_the_stream_carries_function_calls_as_parts_and_never_the_tool_format(server, client):
    chunks = list(client.models.generate_content_stream(model=server.model, contents=QUESTION,
                                                        config=config(names=["get_time"])))
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert not any(p.text and "tool_calls" in p.text for p in parts)
    calls = [p.function_call for p in parts if p.function_call]
    assert calls and {c.name for c in calls} == {"get_time"}  # allowedFunctionNames narrows the choice
    assert chunks[-1].candidates[0].finish_reason == "STOP" and chunks[-1].usage_metadata.prompt_token_count > 0


def test_a_call_cut_by_max_output_tokens_shows_no_tool_format(server, client):
    cut = client.models.generate_content(model=server.model, contents=QUESTION, config=config(max_output_tokens=3))
    assert cut.candidates[0].finish_reason == "MAX_TOKENS" and cut.function_calls is None
    assert not cut.candidates[0].content.parts  # the call being written is dropped, never shown as text
    chunks = list(client.models.generate_content_stream(model=server.model, contents=QUESTION,
                                                        config=config(max_output_tokens=3)))
    assert not any(p.text for c in chunks for p in c.candidates[0].content.parts or [])


def test_mode_none_answers_text(server, client):
    reply = client.models.generate_content(model=server.model, contents=QUESTION,
                                           config=config("NONE", max_output_tokens=6))
    assert reply.function_calls is None and isinstance(reply.candidates[0].content.parts[0].text, str)


def test_a_pydantic_response_schema_is_parsed_by_the_client(server, client):
    reply = client.models.generate_content(
        model=server.model, contents="Describe Rome.",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=City,
                                           temperature=0, max_output_tokens=64))
    assert isinstance(reply.parsed, City), reply.text
    assert list(json.loads(reply.text)) == ["name", "sunny", "rating"]  # propertyOrdering is the key order
    listed = client.models.generate_content(
        model=server.model, contents="Name a colour.",
        config=types.GenerateContentConfig(response_mime_type="text/x.enum", temperature=0,
                                           response_schema={"type": "STRING", "enum": ["red", "green"]}))
    assert listed.text in ("red", "green")


def test_count_tokens_is_the_prompt_a_generation_reads(server, client):
    body = {"contents": [{"role": "user", "parts": [{"text": "Weather in Oslo?"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [WEATHER.model_dump(mode="json", by_alias=True, exclude_none=True)]}],
            "generationConfig": {"maxOutputTokens": 1}}
    generated = raw(server, server.model, body).json()["usageMetadata"]["promptTokenCount"]
    counted = raw(server, server.model, {"generateContentRequest": {"model": f"models/{server.model}", **body}},
                  "countTokens")
    assert counted.json() == {"totalTokens": generated}
    both = raw(server, server.model, {"contents": body["contents"], "generateContentRequest": body}, "countTokens")
    assert both.status_code == 400


def test_a_cached_content_keeps_its_tools_and_tool_config(server):
    cached = httpx.post(f"{server.url}/v1beta/cachedContents", timeout=60, json={
        "model": f"models/{server.model}", "systemInstruction": {"parts": [{"text": "Tools follow. " * 20}]},
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema":
                                             WEATHER.parameters_json_schema}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}})
    assert cached.status_code == 200, cached.text
    reply = raw(server, server.model, {"cachedContent": cached.json()["name"],
                                       "contents": [{"role": "user", "parts": [{"text": "Paris?"}]}],
                                       "generationConfig": {"maxOutputTokens": 400}}).json()
    parts = reply["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["name"] for p in parts] == ["get_weather"] * len(parts)
    assert reply["usageMetadata"]["cachedContentTokenCount"] >= cached.json()["usageMetadata"]["totalTokenCount"] - 16
    httpx.delete(f"{server.url}/v1beta/{cached.json()['name']}")


def test_a_lone_surrogate_in_a_free_form_field_is_invalid_argument(server):
    for part in ({"functionResponse": {"name": "f", "response": {"r": "\ud800"}}},
                 {"functionCall": {"name": "f", "args": {"\ud800": 1}}}):
        body = json.dumps({"contents": [{"role": "model" if "functionCall" in part else "user", "parts": [part]}]})
        reply = httpx.post(f"{server.url}/v1beta/models/{server.model}:generateContent", content=body,
                           headers={"content-type": "application/json"})
        assert reply.status_code == 400 and "surrogate" in reply.json()["error"]["message"]


@pytest.mark.parametrize("body, named", [
    ({"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}, "declares no functions"),
    ({"tools": [{"functionDeclarations": [{"name": "f"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}}}, "'g'"),
    ({"tools": [{"functionDeclarations": [{"name": "f"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}}}, "ANY or VALIDATED"),
    ({"tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT"},
                                           "parametersJsonSchema": {"type": "object"}}]}]}, "not both"),
    ({"tools": [{"functionDeclarations": [{"name": "bad name"}]}]}, "name"),
    ({"tools": [{"googleSearch": {}}]}, "googleSearch"),
    ({"generationConfig": {"responseMimeType": "application/json",
                           "responseSchema": {"type": "OBJECT", "additionalProperties": False}}},
     "additionalProperties"),
    ({"generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "WORD"}}}, "type"),
    ({"generationConfig": {"responseMimeType": "application/json",
                           "responseSchema": {"type": "STRING", "minLength": "x", "maximum": []}}}, "responseSchema"),
    ({"generationConfig": {"responseMimeType": "application/json",
                           "responseSchema": {"type": "OBJECT", "required": "a"}}}, "responseSchema"),
    ({"generationConfig": {"responseSchema": {"type": "STRING"}}}, "responseMimeType"),
    ({"generationConfig": {"responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING"}}}, "enum"),
    ({"contents": [{"role": "user", "parts": [{"functionCall": {"name": "f"}}]}]}, "model turns"),
    ({"contents": [{"role": "user", "parts": [{"text": "a", "functionResponse": {"name": "f", "response": {}}}]}]},
     "exactly one"),
])
def test_bad_tool_and_schema_fields_are_invalid_argument(server, body, named):
    reply = raw(server, server.model, {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}], **body})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and named in error["message"]
