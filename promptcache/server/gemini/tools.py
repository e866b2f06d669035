"""Gemini's function calling and structured output, on the structure every dialect shares
(server/structured/): the same tool formats, grammars and reply parsing as OpenAI's `tools`
and Anthropic's, so one conversation renders to the same tokens in each.

- `tools[].functionDeclarations` are the tools; `toolConfig.functionCallingConfig.mode` is the
  choice: AUTO (and VALIDATED, as every call here is constrained anyway) a call or text, ANY a
  call, NONE text. `allowedFunctionNames` (with ANY or VALIDATED) narrows which functions the
  grammar lets the model call; the prompt still lists every declaration.
- A model turn's `functionCall` parts are rendered back as the model generated them, and a
  user turn's `functionResponse` parts as tool turns, so a round trip's next prompt extends the
  previous one token for token and is read from the cache.
- `responseMimeType: application/json` constrains the reply to JSON, to `responseSchema`
  (Gemini's OpenAPI subset, gemini/openapi.py) or `responseJsonSchema` when given;
  `text/x.enum` to one of the schema's enum values.
"""

from __future__ import annotations

import json
from dataclasses import replace

from promptcache.engine.api import EngineInputError
from promptcache.engine.structured.spec import StructureSpec
from promptcache.server.chat import Turn
from promptcache.server.errors import bad_request
from promptcache.server.gemini.openapi import json_schema
from promptcache.server.gemini.schema import Content, GenerationConfig, Tool, ToolConfig
from promptcache.server.structured.openai_chat import ChatStructure, native_format, prompt_turns, reply_calls
from promptcache.server.structured.openai_chat import tool_structure
from promptcache.server.structured.tools import Tool as NeutralTool
from promptcache.server.structured.tools import ToolCall, ToolChoice, ToolMessage, dumps

EMPTY_PARAMETERS = {"type": "object", "properties": {}}
_MODES = {"NONE": "none", "ANY": "required"}  # AUTO, VALIDATED and MODE_UNSPECIFIED: auto


def declared_tools(tools: list[Tool] | None) -> list[NeutralTool]:
    """Every functionDeclaration, its parameters as a JSON Schema."""
    out = []
    for i, tool in enumerate(tools or []):
        for j, fn in enumerate(tool.functionDeclarations):
            param = f"tools[{i}].functionDeclarations[{j}]"
            if fn.parameters is not None and fn.parametersJsonSchema is not None:
                raise bad_request(f"{param}: give parameters or parametersJsonSchema, not both", param=param)
            parameters = fn.parametersJsonSchema or EMPTY_PARAMETERS
            if fn.parameters is not None:
                parameters = json_schema(fn.parameters, f"{param}.parameters")
            out.append(NeutralTool(fn.name, _description(fn), parameters, strict=True))
    return out


def _description(fn) -> str:
    """The description, and what the function returns when the client says (Gemini shows the
    model both)."""
    returns = fn.responseJsonSchema if fn.responseJsonSchema is not None else fn.response
    text = fn.description or ""
    return f"{text}\nReturns: {dumps(returns)}".strip() if returns is not None else text


def output_spec(config: GenerationConfig | None) -> StructureSpec | None:
    """The reply's constraint from responseMimeType and its schema, or None (free text)."""
    if config is None:
        return None
    mime, param = config.responseMimeType or "text/plain", "generationConfig.responseMimeType"
    if config.responseSchema is not None and config.responseJsonSchema is not None:
        raise bad_request("give responseSchema or responseJsonSchema, not both",
                          param="generationConfig.responseSchema")
    schema = config.responseJsonSchema
    if config.responseSchema is not None:
        schema = json_schema(config.responseSchema, "generationConfig.responseSchema")
    if mime == "text/plain":
        if schema is not None:
            raise bad_request("a response schema needs responseMimeType application/json or text/x.enum", param=param)
        return None
    if mime == "text/x.enum":
        values = (schema or {}).get("enum")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise bad_request("text/x.enum needs a responseSchema with an enum of strings", param=param)
        return StructureSpec("choice", json.dumps(values), strict=True, param=param)
    if schema is None:
        return StructureSpec("json_object", strict=True, param=param)
    return StructureSpec("json_schema", json.dumps(schema), strict=True, param="generationConfig.responseSchema")


def plan(renderer, tools: list[Tool] | None, tool_config: ToolConfig | None,
         config: GenerationConfig | None) -> ChatStructure:
    """The request's structure: its tools and choice, or its output format."""
    declared = declared_tools(tools)
    calling = tool_config.functionCallingConfig if tool_config else None
    mode = (calling.mode if calling else None) or "AUTO"
    names = (calling.allowedFunctionNames if calling else None) or []
    param = "toolConfig.functionCallingConfig"
    if names and mode not in ("ANY", "VALIDATED"):
        raise bad_request("allowedFunctionNames needs mode ANY or VALIDATED", param=param)
    if not declared and (names or mode == "ANY"):
        raise bad_request(f"{param} asks for a function call, and the request declares no functions", param=param)
    unknown = sorted(set(names) - {t.name for t in declared})
    if unknown:
        raise bad_request(f"allowedFunctionNames names a function that is not declared: {unknown[0]!r}", param=param)
    callable_tools = [t for t in declared if t.name in names] if names else declared
    choice = ToolChoice(_MODES.get(mode, "auto")) if declared else None
    try:
        structure = tool_structure(callable_tools, choice, native_format=bool(declared) and native_format(renderer),
                                   output=output_spec(config))
    except EngineInputError as err:
        raise bad_request(str(err), param=err.param or param) from None
    return replace(structure, tools=declared) if names else structure


def messages(system: Content | None, contents: list[Content] | None) -> list[ToolMessage]:
    """Gemini contents as neutral turns: "model" is the assistant (its functionCall parts its
    calls), a user turn's functionResponse parts tool turns, a system instruction a system turn."""
    out = [ToolMessage("system", _text(system, "systemInstruction"))] if system is not None else []
    for i, content in enumerate(contents or []):
        where = f"contents[{i}]"
        if content.role == "model":
            if any(p.functionResponse is not None for p in content.parts):
                raise bad_request(f"{where}: functionResponse parts belong in user turns", param=where)
            calls = tuple(ToolCall(p.functionCall.name, p.functionCall.args or {})
                          for p in content.parts if p.functionCall is not None)
            out.append(ToolMessage("assistant", "".join(p.text for p in content.parts if p.text is not None), calls))
            continue
        if any(p.functionCall is not None for p in content.parts):
            raise bad_request(f"{where}: functionCall parts belong in model turns", param=where)
        out.extend(_user_turns(content))
    return out


def _text(content: Content, where: str) -> str:
    if any(p.text is None for p in content.parts):
        raise bad_request(f"{where} may hold only text parts", param=where)
    return "".join(p.text for p in content.parts)


def _user_turns(content: Content) -> list[ToolMessage]:
    out, text = [], []
    for part in content.parts:
        if part.functionResponse is None:
            text.append(part.text)
            continue
        if text:
            out.append(ToolMessage("user", "".join(text)))
            text = []
        result = part.functionResponse
        out.append(ToolMessage("tool", dumps(result.response), tool_call_id=result.id or result.name))
    if text:
        out.append(ToolMessage("user", "".join(text)))
    return out


def turns(structure: ChatStructure, system: Content | None, contents: list[Content] | None) -> list[Turn]:
    """The conversation to render under `structure` (the tool list joins the system turn where
    the template has no tool format of its own)."""
    return prompt_turns(messages(system, contents), structure)


def reply_parts(text: str, structure: ChatStructure, finish_reason: str | None) -> list[dict]:
    """A finished reply's parts: its text, then a functionCall part per call (cut by
    maxOutputTokens, the calls it completed; the tool format itself never shows)."""
    calls, content = reply_calls(text, structure, finish_reason or "stop")
    if not calls:  # no content: cut inside its first call, which is not shown
        return [{"text": content}] if content is not None else []
    return ([{"text": content}] if content else []) + [{"functionCall": {"name": c.name, "args": c.arguments}}
                                                      for c in calls]
