"""Prefix-stability lint: what makes prompts that should share a prefix diverge early.

Three findings, each with where the prompts diverge and how many requests it affects:

- volatile text in a system prompt: system prompts equal once timestamps, dates, UUIDs, request
  ids and long hex or digit runs are masked, but different as sent; or equal in their first and
  last 48 characters but different in between (a random example, a rotating hint);
- tools in varying order: the same set of tool names sent in more than one order (a template
  renders the list in order, so the prefix ends at the first tool out of place);
- reasoning dropped by the chat template: assistant turns that carried reasoning which the
  rendered prompt no longer contains, so the conversation diverges from what was generated
  there (and from any prompt that kept it).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from promptcache.analyze.dialects import LoggedPrompt

_VOLATILE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"  # ISO date/time
    r"|\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b"  # clock time
    r"|\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"  # UUID
    r"|\b(?:req|request|trace|session|conversation|run)[-_ ]?id\b\W{0,3}[\w-]+"  # labelled ids
    r"|\b[0-9a-fA-F]{16,}\b"  # long hex
    r"|\b\d{9,}\b"  # unix times, long counters
    r"|\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? \d{1,2} [A-Z][a-z]+ \d{4}\b",  # written dates
    re.IGNORECASE,
)
_EDGE = 48


@dataclass(frozen=True)
class Finding:
    kind: str  # volatile-system-prompt, varying-system-prompt, tool-order, reasoning-dropped
    message: str
    position: str  # where the prompts diverge, in words
    char: int | None  # character offset in the system prompt, or None
    affected: int  # requests affected
    example_line: int  # a log line showing it

    def as_dict(self) -> dict:
        return asdict(self)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _divergence(texts: Counter) -> int:
    """Where the group's texts first part from its most common one."""
    reference = texts.most_common(1)[0][0]
    return min(_common_prefix(reference, t) for t in texts if t != reference)


def _system_findings(prompts: Sequence[tuple[int, LoggedPrompt]]) -> list[Finding]:
    masked: dict[str, Counter] = defaultdict(Counter)
    lines: dict[str, int] = {}
    seen: Counter = Counter()
    for line, prompt in prompts:
        if prompt.messages and prompt.messages[0].role in ("system", "developer"):
            text = prompt.messages[0].content
            seen[text] += 1
            lines.setdefault(text, line)
    for text, count in seen.items():  # each distinct system prompt masked once
        masked[_VOLATILE.sub("\x00", text)][text] += count
    findings = []
    rest: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for group in masked.values():
        if len(group) > 1:
            at = _divergence(group)
            sample = next(t for t in group if t != group.most_common(1)[0][0])
            what = _VOLATILE.search(sample, max(0, at - 40))
            shown = what.group(0) if what else sample[at:at + 20]
            findings.append(Finding(
                "volatile-system-prompt",
                f"{len(group)} system prompts differ only in a timestamp or id such as {shown!r}: move it to the end of "
                f"the prompt (or out of it) so everything before it is shared",
                f"character {at} of the system prompt", at, sum(group.values()), lines[sample]))
        else:
            text = next(iter(group))
            if len(text) > 2 * _EDGE:
                rest[(text[:_EDGE], text[-_EDGE:])][text] += sum(group.values())
    for group in rest.values():
        if len(group) > 1:
            at = _divergence(group)
            sample = next(t for t in group if t != group.most_common(1)[0][0])
            findings.append(Finding(
                "varying-system-prompt",
                f"{len(group)} system prompts share their start and end but differ in between (a random example or "
                f"rotating text?): put the varying part last", f"character {at} of the system prompt", at,
                sum(group.values()), lines[sample]))
    return findings


def _tool_findings(prompts: Sequence[tuple[int, LoggedPrompt]]) -> list[Finding]:
    orders: dict[frozenset, Counter] = defaultdict(Counter)
    lines: dict[tuple, int] = {}
    for line, prompt in prompts:
        if prompt.tools and len(prompt.tools) > 1:
            names = tuple(str((t.get("function") or {}).get("name", "")) for t in prompt.tools)
            orders[frozenset(names)][names] += 1
            lines.setdefault(names, line)
    findings = []
    for group in orders.values():
        if len(group) > 1:
            reference, _ = group.most_common(1)[0]
            others = [o for o in group if o != reference]
            first = min(next(i for i, (a, b) in enumerate(zip(reference, o)) if a != b) for o in others)
            findings.append(Finding(
                "tool-order", f"the same {len(reference)} tools are sent in {len(group)} orders: sort them (by name) "
                f"before sending", f"tool {first} ({reference[first]!r} in the most common order)", None,
                sum(group[o] for o in others), lines[others[0]]))
    return findings


def _think(content: str) -> str | None:
    match = re.search(r"<think>(.*?)</think>", content, re.DOTALL)
    return match.group(1).strip() if match and match.group(1).strip() else None


def _reasoning_findings(prompts: Sequence[tuple[int, LoggedPrompt]], rendered: dict[int, str]) -> list[Finding]:
    affected, first_line, first_turn = 0, None, None
    for line, prompt in prompts:
        text = rendered.get(line)
        if text is None:
            continue
        for index, message in enumerate(prompt.messages):
            if message.role != "assistant":
                continue
            thought = message.reasoning or _think(message.content)
            if thought and thought[:200] not in text:
                affected += 1
                if first_line is None:
                    first_line, first_turn = line, index
                break
    if not affected:
        return []
    return [Finding("reasoning-dropped", "earlier assistant turns carried reasoning that the rendered prompt drops: "
                    "the next turn's prompt diverges from the generated sequence at that turn",
                    f"message {first_turn} (the first assistant turn with reasoning)", None, affected, first_line)]


def lint(prompts: Sequence[tuple[int, LoggedPrompt]], rendered: dict[int, str]) -> list[Finding]:
    """Findings, most affected requests first. `prompts` are (log line, prompt); `rendered`
    maps a log line to its rendered chat prompt text."""
    findings = _system_findings(prompts) + _tool_findings(prompts) + _reasoning_findings(prompts, rendered)
    return sorted(findings, key=lambda f: -f.affected)
