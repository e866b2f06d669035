"""A prompt's text refused before it is tokenized when no tokenization of it could fit the
context: past context x (the most characters one token covers) characters, it has more tokens
than the context holds whatever its content (model/token_span.py proves the bound per
tokenizer). Tokenizing a 7 MB chat body took 12.6 s of CPU only to learn that it did not fit;
the refusal now costs a length check. Texts within the bound are tokenized off the GIL
(model/tokenizer.py), so a long one does not stall other requests.
"""

from __future__ import annotations

from promptcache.server.errors import bad_request


def max_prompt_chars(engine) -> int | None:
    """The longest prompt text that could fit `engine`'s context; None: no bound is known."""
    per_token = getattr(engine.tokenizer, "max_chars_per_token", None)
    return None if per_token is None else engine.context_length * per_token


def check_prompt_chars(text: str, max_chars: int | None, param: str) -> None:
    """A 400 naming `param` when `text` is longer than any prompt that fits the context."""
    if max_chars is not None and len(text) > max_chars:
        raise bad_request(f"The prompt is {len(text)} characters long; no text over {max_chars} characters fits this "
                          "model's context, so it was not tokenized.", param=param)
