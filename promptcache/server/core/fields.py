"""Field types every dialect's schema uses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Sampling knobs as OpenAI and Anthropic both bound them; the temperature's upper bound is each
# dialect's own (`Annotated[Temperature, Field(le=...)]`). Infinity and NaN are refused.
Temperature = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
TopP = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
TopK = Annotated[int, Field(ge=0)]


def _encodable(text: str) -> str:
    # JSON allows lone surrogates ("\ud800"); the tokenizer cannot take them, and failing
    # later would be a 500 rather than the 400 it should be.
    text.encode("utf-8")
    return text


Text = Annotated[str, AfterValidator(_encodable)]


def joined_text(content: str | list | None) -> str:
    """Message content as one string: text parts (anything with `.text`) joined by newlines,
    None empty."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content)


def refuse_unsupported(raw: object, neutral: dict[str, tuple]) -> None:
    """A 400 naming the first field of `raw` (a request body) that this server does not
    implement and that is set to anything but one of its neutral values: such a field would
    change the reply, so ignoring it would answer a different request than the one sent.
    Raised before the body is validated field by field, as the dialect's error shape."""
    if not isinstance(raw, dict):
        return
    from promptcache.server.errors import bad_request

    for name, allowed in neutral.items():
        if name in raw and raw[name] is not None and raw[name] not in allowed:
            raise bad_request(f"'{name}' is not supported by this server (it would be ignored, so it is refused).",
                              param=name, code="unsupported_parameter")


def refusing(neutral: dict[str, tuple]):
    """A body's validator that runs `refuse_unsupported(raw, neutral)` before anything else:
    `_refuse_unsupported = refusing(UNSUPPORTED)` in the body's class."""

    def refuse(cls, raw: Any) -> Any:
        refuse_unsupported(raw, neutral)
        return raw

    return model_validator(mode="before")(classmethod(refuse))
