"""Constrained decoding: a request may carry a grammar (a JSON schema, a regex, a choice, a Lark
grammar), and each of its tokens is sampled only among those the grammar allows next.

`spec` describes what a client asked for (pure data, crosses threads); `compiler` turns it into
a compiled grammar off the engine loop, with limits checked before work and a cache by content;
`constraint` is one sequence's live matcher and its token mask.
"""

from promptcache.engine.structured.spec import GrammarError, StructureSpec

__all__ = ["GrammarError", "StructureSpec"]
