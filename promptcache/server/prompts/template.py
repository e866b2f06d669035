"""Prompt templates: text with `{{name}}` variables, rendered by plain substitution.

Only `{{ identifier }}` is a variable (letters, digits and underscores, not starting with a
digit; spaces inside the braces are allowed), which is also MLflow's prompt format, so a
template moves between the stores unchanged. Anything between `{{` and `}}` that is not an
identifier (`{{user name}}`, `{{ x.y }}`) is refused when the template is registered rather
than left in the prompt as literal text; other braces are ordinary text (JSON examples stay as
written). Nothing is evaluated: there are no filters, loops or attribute lookups, so a
template cannot run code and rendering costs one pass over the text.

Values are inserted verbatim, not escaped: a rendered template is model input, exactly like a
message's content, and no escaping would mean anything to the model. A value that itself holds
`{{x}}` is not expanded again (substitution is a single pass).

The rendered size is computed before anything is substituted (each variable's uses times its
value's length), and a caller's limit refuses it there: a 130 KB template of 26,000 `{{a}}`
with a 1 KB value is 26 million characters, which a 1.2 KB request once made the server build
and tokenize (71 s) before refusing it as longer than the context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# What looks like a placeholder: `{{`, then no braces or line breaks, then `}}`.
_PLACEHOLDER = re.compile(r"\{\{([^{}\n]*)\}\}")


class TemplateError(ValueError):
    """A template or its variables are not valid; `param` names the offending field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Template:
    text: str

    @property
    def variables(self) -> tuple[str, ...]:
        """The variable names, each once, in order of first use."""
        return tuple(dict.fromkeys(m.group(1) for m in VARIABLE.finditer(self.text)))

    @property
    def static_prefix(self) -> str:
        """The text before the first variable: the same in every rendering, so its KV can be
        computed once at registration (the whole text when there is no variable)."""
        first = VARIABLE.search(self.text)
        return self.text if first is None else self.text[: first.start()]

    def rendered_chars(self, values: Mapping[str, str]) -> int:
        """The length `render(values)` would have, without building it."""
        return len(self.text) + sum(len(values.get(m.group(1), "")) - len(m.group(0))
                                    for m in VARIABLE.finditer(self.text))

    def render(self, values: Mapping[str, str], param: str = "prompt.variables",
               max_chars: int | None = None) -> str:
        """The text with every variable replaced. A missing or unknown variable is an error
        naming it: an unknown one is usually a typo, and dropping it would change the prompt
        in silence. A rendering longer than `max_chars` is refused before it is built."""
        names = set(self.variables)
        missing = [n for n in self.variables if n not in values]
        if missing:
            raise TemplateError(f"missing value for the template variable(s) {', '.join(missing)}", param)
        unknown = sorted(set(values) - names)
        if unknown:
            shown = ", ".join(repr(n[:64]) for n in unknown[:5])
            raise TemplateError(f"the template has no variable(s) {shown}; it has {', '.join(self.variables) or 'none'}",
                                param)
        if max_chars is not None and (size := self.rendered_chars(values)) > max_chars:
            raise TemplateError(f"the rendered template would be {size} characters long; the limit is {max_chars}",
                                param)
        return VARIABLE.sub(lambda m: values[m.group(1)], self.text)


def parse(text: str, *, max_chars: int, max_variables: int, param: str = "template") -> Template:
    """A template after its limits, checked before any other work; raises TemplateError."""
    if not text:
        raise TemplateError("the template is empty", param)
    if len(text) > max_chars:
        raise TemplateError(f"the template is {len(text)} characters long; the limit is {max_chars}", param)
    for match in _PLACEHOLDER.finditer(text):
        if not VARIABLE.fullmatch(match.group(0)):
            raise TemplateError(f"{match.group(0)[:80]!r} is not a variable: write {{{{name}}}} with a name of "
                                "letters, digits and underscores", param)
    template = Template(text)
    if len(template.variables) > max_variables:
        raise TemplateError(f"the template has {len(template.variables)} variables; the limit is {max_variables}",
                            param)
    return template
