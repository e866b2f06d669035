"""Rendering a model's own jinja2 chat template, byte for byte as transformers does.

Prompt caching depends on this being exact: a conversation rendered one character differently
from what the model was trained on still works, but it also produces different block keys than
a client that renders with transformers, and every shared prefix becomes a miss. So the
environment below mirrors transformers' `_compile_jinja_template` (same sandbox, same
`trim_blocks`/`lstrip_blocks`, same `tojson`, `raise_exception`, `strftime_now`, and the same
guarded `dict`/`namespace` globals), and messages are reduced to plain JSON data first.

Templates come from model files and are untrusted: they run in an ImmutableSandboxedEnvironment.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptcache.model.errors import ModelError


class ChatTemplate:
    """A compiled chat template plus the special-token strings templates refer to."""

    def __init__(self, source: str, special_tokens: dict[str, str | None] | None = None):
        self.source = source
        # bos_token, eos_token, ... as transformers passes its special_tokens_map.
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        try:
            self._template = _compile(source)
        except jinja2.TemplateError as e:
            raise ModelError(f"the model's chat template does not compile: {e}") from None

    def render(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages`. Raises ModelError if the template rejects them (its
        raise_exception), e.g. roles in an order the model does not accept."""
        variables = {**self.special_tokens, **extra}
        try:
            return self._template.render(
                messages=_plain(messages),
                tools=_plain(tools),
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **_plain(variables),
            )
        except jinja2.TemplateError as e:
            raise ModelError(f"chat template error: {e}") from None


def _plain(value: Any) -> Any:
    """Rebuild template inputs from plain JSON types, so the sandbox never sees methods of rich
    objects (pydantic models, numpy scalars) that it does not know to be dangerous."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False):
    # jinja's own tojson escapes HTML characters; transformers' does not, and templates rely on it.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` for templates without exposing the dict type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """jinja's namespace(), refusing underscore names that lead to CPython internals."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attribute {name!r}")


class _GenerationTag(jinja2.ext.Extension):
    """Accept `{% generation %}...{% endgeneration %}` (used by training templates) and render
    its body unchanged, as transformers does when it is not tracking assistant masks."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)
