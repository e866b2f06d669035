"""Field types every dialect's schema uses."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from promptcache.engine.api import (INT64_MAX, INT64_MIN, MAX_LOGIT_BIAS, MAX_LOGIT_BIAS_TOKENS, MAX_PENALTY,
                                    REPETITION_PENALTY_RANGE)
from promptcache.server.core.lenient import sanitized

# Sampling knobs as OpenAI and Anthropic both bound them; the temperature's upper bound is each
# dialect's own (`Annotated[Temperature, Field(le=...)]`). Infinity and NaN are refused.
Temperature = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
TopP = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
TopK = Annotated[int, Field(ge=0)]
# Every dialect's seed is OpenAI's int64 (torch refuses seeds past 2**64 - 1).
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
# OpenAI's presence and frequency penalties (Gemini's presencePenalty, frequencyPenalty).
Penalty = Annotated[float, Field(ge=-MAX_PENALTY, le=MAX_PENALTY, allow_inf_nan=False)]
RepetitionPenalty = Annotated[float, Field(ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1],
                                           allow_inf_nan=False)]
MinP = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

_TOKEN_ID = re.compile(r"0|[1-9][0-9]{0,9}")  # one spelling per id: "7", never "07" or " 7"


def _logit_bias(value: dict[str, Any]) -> dict[str, Any]:
    # Checked as a whole, so that no error's location (the 400's param, a log line) carries a
    # key the client wrote; the vocabulary bound is the engine's (Engine.validate).
    if len(value) > MAX_LOGIT_BIAS_TOKENS:
        raise ValueError(f"at most {MAX_LOGIT_BIAS_TOKENS} token ids may be biased")
    for key, bias in value.items():
        if not _TOKEN_ID.fullmatch(key):
            raise ValueError("keys must be token ids written as decimal integers, such as \"50256\"")
        number = isinstance(bias, (int, float)) and not isinstance(bias, bool)
        if not (number and -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS):
            raise ValueError(f"biases must be numbers between -{MAX_LOGIT_BIAS:g} and {MAX_LOGIT_BIAS:g}")
    return value


# OpenAI's logit_bias: {"token id": bias}; as (id, bias) pairs with `logit_bias_pairs`.
LogitBias = Annotated[dict[str, Any], AfterValidator(_logit_bias)]


def logit_bias_pairs(value: dict[str, Any] | None) -> tuple[tuple[int, float], ...]:
    return tuple(sorted((int(key), float(bias)) for key, bias in (value or {}).items()))


def _encodable(text: str) -> str:
    # JSON allows lone surrogates ("\ud800"); the tokenizer cannot take them, and failing
    # later would be a 500 rather than the 400 it should be.
    text.encode("utf-8")
    return text


Text = Annotated[str, AfterValidator(_encodable)]


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lone_surrogate(value: Any) -> str | None:
    """Where in a JSON value (dicts, lists, strings, numbers) the first string holding a lone
    surrogate is, as a path like `.properties.city` or `[2]` ("" for the value itself; for a key,
    the path of its object); None if there is none. Iterative, so a deeply nested value cannot
    exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not _encodes(item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str) and not _encodes(key):
                    return path
                stack.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None


def _encodable_json(value: Any) -> Any:
    # Fields typed Any (tool schemas, tool_choice, response formats) are not Text: their strings
    # reach json.dumps(...).encode(), the template and the grammar compiler, where a lone
    # surrogate would be a 500. Checked once, whole, when the body is validated.
    path = lone_surrogate(value)
    if path is not None:
        where = f"at {sanitized(path)}" if path else "at its top level"
        raise ValueError(f"a string {where} holds a lone surrogate, which is not valid UTF-8")
    return value


# Any-typed request fields, their strings (keys included) checked for lone surrogates.
JsonValue = Annotated[Any, AfterValidator(_encodable_json)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_encodable_json)]


# OpenAI's limits on `metadata`: at most 16 pairs, keys of at most 64 characters, values of at
# most 512. It is stored with a response for 30 days: without them one 7 MB map a request filled
# the store.
MAX_METADATA_PAIRS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512


def _metadata(pairs: dict[str, str]) -> dict[str, str]:
    # One check of the whole map, so the 400 names `metadata` and never quotes a client's key.
    if len(pairs) > MAX_METADATA_PAIRS:
        raise ValueError(f"{len(pairs)} pairs is more than the limit of {MAX_METADATA_PAIRS}")
    for key, value in pairs.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise ValueError(f"a key is {len(key)} characters long; the limit is {MAX_METADATA_KEY_CHARS}")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"a value is {len(value)} characters long; the limit is {MAX_METADATA_VALUE_CHARS}")
    return _encodable_json(pairs)


Metadata = Annotated[dict[str, str], AfterValidator(_metadata)]


def check_token_ids(tokens: list[int], vocab_size: int, param: str = "prompt") -> list[int]:
    """A 400 naming `param` when an id is outside the vocabulary: ids reach the block-key packer
    (32-bit) and the embedding table, where one out of range would be a 500."""
    if any(not (isinstance(t, int) and 0 <= t < vocab_size) for t in tokens):
        from promptcache.server.errors import bad_request

        raise bad_request(f"'{param}' must be one list of token ids from 0 to {vocab_size - 1} (the vocabulary).",
                          param=param)
    return tokens


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
