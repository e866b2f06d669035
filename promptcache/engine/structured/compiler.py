"""Compiling a `StructureSpec` into a grammar matcher, once per distinct spec.

llguidance does the work (it was chosen by measurement, docs/benchmarks.md "Structured
outputs"): it has no dependencies, it builds a JSON-schema grammar in milliseconds, and it
computes a token mask in tens of microseconds with the GIL released. Compilation is still kept
off the engine loop: the server calls `compile` from a worker thread, and the engine receives
the compiled grammar ready to copy, so a slow or hostile schema never stalls other requests.

Compiled grammars are cached by a hash of the spec and the tokenizer, within a byte budget. A
matcher's own memory is not observable, so an entry is charged the size of its grammar text plus
a fixed overhead per entry: an estimate, stated as such, that keeps many small schemas from
crowding out the rest and one huge grammar from being kept at all.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import llguidance

from promptcache.engine.structured.spec import GrammarError, StructureSpec

ENTRY_OVERHEAD_BYTES = 64 * 1024
DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024

# Resource limits enforced by the grammar library while it builds and runs a grammar: a grammar
# past them fails to compile (a 400) instead of taking the CPU. Lower than the library's defaults,
# which are sized for offline use.
LIMITS = dict(max_grammar_size=200_000, max_lexer_states=50_000, initial_lexer_fuel=500_000,
              step_lexer_fuel=200_000, max_items_in_row=2_000, verbose_errors=False)

# JSON is generated compactly with Python's separators and no free whitespace: a small model
# given free whitespace can emit newlines until max_tokens.
JSON_OPTIONS = dict(item_separator=", ", key_separator=": ", whitespace_flexible=False)


@dataclass(frozen=True)
class CompiledGrammar:
    """A compiled constraint: `matcher` is the template each request copies; `warnings` lists
    what a non-strict schema asked for that is not enforced (e.g. unimplemented keywords)."""

    key: str
    matcher: llguidance.LLMatcher
    warnings: tuple[str, ...]
    charged_bytes: int

    def new_matcher(self) -> llguidance.LLMatcher:
        return self.matcher.deep_copy()


class GrammarCompiler:
    """Thread-safe: many server threads may compile at once; the cache is behind a lock that is
    never held while a grammar compiles."""

    def __init__(self, tokenizer, *, vocab_size: int | None = None, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        """`vocab_size` is the width of the model's logits when it pads its vocabulary past the
        tokenizer's; masks then forbid the padding ids."""
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self._fingerprint = hashlib.sha256(tokenizer.backend.to_str().encode()).hexdigest()[:16]
        self._lltokenizer: llguidance.LLTokenizer | None = None
        self._budget = budget_bytes
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def lltokenizer(self) -> llguidance.LLTokenizer:
        """The grammar library's view of our tokenizer, built on first use (about a second)."""
        with self._lock:
            if self._lltokenizer is None:
                self._lltokenizer = llguidance.LLTokenizer(
                    self._tokenizer.backend.to_str(), n_vocab=self.vocab_size,
                    eos_token=list(self._tokenizer.eos_token_ids))
            return self._lltokenizer

    def key(self, spec: StructureSpec) -> str:
        text = json.dumps([spec.kind, spec.strict, spec.source, self._fingerprint])
        return hashlib.sha256(text.encode()).hexdigest()

    def compile(self, spec: StructureSpec) -> CompiledGrammar:
        """The compiled grammar for `spec`, from the cache or built now (call off the event loop).
        GrammarError names the limit or the problem; nothing is cached for a failed spec."""
        spec.check_limits()
        key = self.key(spec)
        with self._lock:
            if (hit := self._cache.get(key)) is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        grammar = _grammar_text(spec)
        matcher = llguidance.LLMatcher(self.lltokenizer(), grammar, log_level=0,
                                       limits=llguidance.LLParserLimits(**LIMITS))
        if matcher.is_error():
            raise GrammarError(_describe(spec, matcher.get_error()), spec.param)
        compiled = CompiledGrammar(key, matcher, tuple(matcher.get_grammar_warnings()),
                                   len(grammar) + ENTRY_OVERHEAD_BYTES)
        self._remember(compiled)
        return compiled

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self._cache), "bytes": self._used, "budget_bytes": self._budget,
                    "hits": self.hits, "misses": self.misses}

    def _remember(self, compiled: CompiledGrammar) -> None:
        if compiled.charged_bytes > self._budget:
            return
        with self._lock:
            if compiled.key in self._cache:
                return
            self._cache[compiled.key] = compiled
            self._used += compiled.charged_bytes
            while self._used > self._budget:
                _, old = self._cache.popitem(last=False)
                self._used -= old.charged_bytes


def _grammar_text(spec: StructureSpec) -> str:
    if spec.kind in ("json_object", "json_schema"):
        schema = spec.source if spec.kind == "json_schema" else '{"type": "object"}'
        options = {**JSON_OPTIONS, "lenient": not spec.strict}
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=options)
        except ValueError as exc:
            raise GrammarError("the schema must be a JSON object", spec.param) from exc
    if spec.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(spec.source)
    try:
        return llguidance.grammar_from(spec.kind, spec.source)
    except ValueError as exc:
        raise GrammarError(f"the {spec.kind} could not be read", spec.param) from exc


def _describe(spec: StructureSpec, error: str) -> str:
    """The library's message, cut to its first line: it names the keyword or limit at fault."""
    first = error.strip().splitlines()[0] if error.strip() else "invalid"
    return f"the {spec.kind.replace('_', ' ')} cannot be used: {first[:300]}"
