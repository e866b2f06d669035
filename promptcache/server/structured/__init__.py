"""Structured outputs and tool calls, dialect-neutral.

`formats` turns a dialect's output-format field (OpenAI's `response_format`, the Responses
API's `text.format`, vLLM's `structured_outputs`) into an engine `StructureSpec`. `tools` is the
generic tool-call format for models whose chat template has none: the tool list rendered into
the system turn in one fixed form, the grammar that `tool_choice` allows, and the parse of a
reply back into calls. `compile` compiles a spec off the event loop, within a time limit.
"""
