"""Request bodies of the prompt registry, the `prompt` reference that chat completions and
Responses take, and the registry's limits.

The reference has the shape of OpenAI's Responses `prompt` field: `{"id", "version",
"variables"}`, where a version is a string ("2"; an integer is accepted too) and a variable's
value is a string or an `input_text` part. Images and files as variables are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from promptcache.server.core.fields import JsonObject, Text
from promptcache.server.core.lenient import LenientBody


@dataclass(frozen=True)
class PromptLimits:
    """Checked before a template is stored, rendered or tokenized (docs/prompts.md)."""

    max_template_chars: int = 131_072  # a 32k-token system prompt, with room
    max_variables: int = 64  # in one template, and in one request's `variables`
    max_versions: int = 100  # per prompt
    max_prompts: int = 1000  # per tenant
    max_tenant_chars: int = 16 * 2**20  # template text a tenant may store, all versions together
    max_id_chars: int = 64  # ids are pmpt_ + 32 hex digits; anything longer is not one of ours


LIMITS = PromptLimits()


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field of a registry call is an error


class CreatePrompt(Body):
    template: Text
    name: Text | None = None
    warm: bool = False  # compute and pin the static prefix's KV now (and at --warm-prompts)


class CreateVersion(Body):
    template: Text
    warm: bool = False
    make_default: bool = False  # the new version becomes the default at once


class SetDefault(Body):
    version: Text | int


class InputText(LenientBody):  # an unknown field is named in x-ignored-fields
    type: Literal["input_text"]
    text: Text


class PromptReference(BaseModel):
    """`prompt` on a generation request: which template, which version, what to fill in."""

    model_config = ConfigDict(extra="forbid")
    id: Text
    version: Text | int | None = None
    variables: dict[Text, Text | InputText | JsonObject] | None = None

    @field_validator("variables")
    @classmethod
    def _text_only(cls, value):
        for name, v in (value or {}).items():
            if isinstance(v, dict):
                kind = str(v.get("type", "?"))[:32]
                raise ValueError(f"variable {name[:64]!r} is a {kind!r} part; only strings and input_text are "
                                 "supported")
        return value

    def values(self) -> dict[str, str]:
        return {k: v if isinstance(v, str) else v.text for k, v in (self.variables or {}).items()}


def version_number(value: str | int | None, param: str) -> int | None:
    """A version as given ("3", 3, or None for the default) -> its number; a 400 otherwise."""
    from promptcache.server.errors import bad_request

    if value is None:
        return None
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise bad_request(f"a prompt version is a positive integer such as \"2\", not {text[:32]!r}", param=param)
    return int(text)
