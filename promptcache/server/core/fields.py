"""Field types every dialect's schema uses."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _encodable(text: str) -> str:
    # JSON allows lone surrogates ("\ud800"); the tokenizer cannot take them, and failing
    # later would be a 500 rather than the 400 it should be.
    text.encode("utf-8")
    return text


Text = Annotated[str, AfterValidator(_encodable)]
