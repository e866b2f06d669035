"""Moved to `promptcache.server.openai.schema`; this name is kept for the CLI and benchmarks
that import the chat message type from it."""

from promptcache.server.openai.schema import *  # noqa: F401,F403
from promptcache.server.openai.schema import ChatMessage  # noqa: F401
