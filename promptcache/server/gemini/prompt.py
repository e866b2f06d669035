"""A generateContent body -> its rendered prompt and tool structure: what :generateContent,
:streamGenerateContent and :countTokens share, so a count is exactly the prompt a generation
would read.

Same order of work as every dialect: the model name and the cheap limits first, then the
cached content (if named), and only then the render and tokenization, in a bounded worker
thread. With `cachedContent` the prompt is the cached content's system instruction, tools and
contents followed by the request's contents; a request naming one may not set its own
systemInstruction, tools or toolConfig (Gemini's rule).
"""

from __future__ import annotations

from promptcache.server.chat import ChatPrompt
from promptcache.server.core.deps import check_model, off_loop, served_names
from promptcache.server.errors import bad_request
from promptcache.server.gemini import cached
from promptcache.server.gemini import translate as tr
from promptcache.server.gemini.schema import GenerateContentRequest
from promptcache.server.gemini.tools import plan, turns
from promptcache.server.limits import Limits, check_label, check_tools
from promptcache.server.state import ServerState
from promptcache.server.structured.openai_chat import ChatStructure


def check_limits(body: GenerateContentRequest, limits: Limits) -> None:
    if len(body.contents) > limits.max_messages:
        raise bad_request(f"{len(body.contents)} contents is more than the limit of {limits.max_messages}.",
                          param="contents")
    for i, content in enumerate(body.contents):
        if len(content.parts) > limits.max_content_parts:
            raise bad_request(f"{len(content.parts)} parts is more than the limit of {limits.max_content_parts}.",
                              param=f"contents[{i}].parts")
    check_tools(tr.declarations(body.tools), limits)
    for i, stop in enumerate((body.generationConfig.stopSequences or []) if body.generationConfig else []):
        check_label(stop, limits.max_stop_chars, f"generationConfig.stopSequences[{i}]")


async def render(state: ServerState, tenant: str, model: str,
                 body: GenerateContentRequest) -> tuple[ChatPrompt, ChatStructure]:
    """The prompt `body` asks `model` for, and the structure its reply is read with."""
    check_model(state, tr.model_name(model))
    check_limits(body, state.settings.limits)
    system, tools, tool_config, contents = body.systemInstruction, body.tools, body.toolConfig, body.contents
    if body.cachedContent is not None:
        if system is not None or tools or tool_config is not None:
            raise bad_request("a request with cachedContent may not set systemInstruction, tools or toolConfig: "
                              "they are part of the cached content", param="cachedContent")
        record = await cached.find(state, tenant, body.cachedContent)
        if record.data["model"] not in served_names(state):
            raise bad_request(f"cachedContent was created for models/{record.data['model']}", param="cachedContent")
        prefix = cached.prefix_of(record.data)
        system, tools, tool_config, contents = prefix.system, prefix.tools, prefix.tool_config, \
            prefix.contents + contents
    structure = plan(state.renderer, tools, tool_config, body.generationConfig)
    prompt = await off_loop(state, state.renderer.render, turns(structure, system, contents),
                            structure.template_tools)
    return prompt, structure
