"""Compiling an output constraint off the event loop, within a time limit.

The limits on a spec's size and nesting are checked first, in the request's own coroutine,
before any thread or parser is involved. Compilation then runs on a small pool of its own, so
a burst of new schemas cannot occupy the threads other work runs on, and a compile past
`COMPILE_TIMEOUT_S` answers the request with a 400 naming the limit (the grammar library's own
fuel limits bound what the abandoned compile can still cost).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from promptcache.engine.structured.compiler import CompiledGrammar
from promptcache.engine.structured.spec import GrammarError, StructureSpec

COMPILE_TIMEOUT_S = 5.0
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="grammar-compile")


async def compile_structure(engine, spec: StructureSpec | None,
                            timeout_s: float = COMPILE_TIMEOUT_S) -> CompiledGrammar | None:
    if spec is None:
        return None
    spec.check_limits()
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(_POOL, engine.grammars.compile, spec), timeout_s)
    except asyncio.TimeoutError as exc:
        raise GrammarError(f"compiling the {spec.kind} took longer than the limit of {timeout_s:g} s",
                           spec.param) from exc


def ignored_header(compiled: CompiledGrammar | None) -> dict[str, str]:
    """`x-structured-output-ignored`: what a non-strict schema asked for that is not enforced,
    so a silently weaker constraint is never mistaken for the one requested."""
    if compiled is None or not compiled.warnings:
        return {}
    text = "; ".join(w.replace("\r", " ").replace("\n", " ") for w in compiled.warnings)
    return {"x-structured-output-ignored": text.encode("ascii", "backslashreplace").decode()[:500]}
