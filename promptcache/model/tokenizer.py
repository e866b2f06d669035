"""Text <-> token ids, built from the model's own files without transformers.

A GGUF carries no tokenizer.json, only llama.cpp's vocabulary, merges and token types, so the
byte-level BPE is rebuilt here with the `tokenizers` library; the pre-tokenizer is chosen by
`tokenizer.ggml.pre`, the name llama.cpp gives the split rules the merges were learned with.
A Hugging Face directory has tokenizer.json and is loaded as is.

BOS is never left to the backend's post-processor: `encode` always asks the backend for the bare
ids and prepends BOS itself iff `add_special_tokens and add_bos`, so the rule is the same for
both formats and visible in one place.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers

from promptcache.model.chat_template import ChatTemplate
from promptcache.model.errors import ModelError, ModelFormatError, UnsupportedModelError
from promptcache.model.token_span import max_chars_per_token

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
# Texts at least this long are tokenized through the library's batch call, which releases the
# GIL (the single-text call holds it: a 7 MB prompt stalled every other thread for seconds).
# The ids are the same: both run the same pipeline on the one text.
GIL_FREE_CHARS = 4096

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _split_then_bytes(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _gpt2_bytes() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _smollm_bytes() -> pre_tokenizers.PreTokenizer:
    # SmolLM's tokenizer.json: every digit its own pre-token, then GPT-2's byte-level split.
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )


# tokenizer.ggml.pre -> pre-tokenizer; anything unlisted gets GPT-2's rules.
_PRE_TOKENIZERS = {
    "smollm": _smollm_bytes,
    "llama3": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "llama-v3": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "llama-bpe": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "smaug-bpe": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "qwen2": lambda: _split_then_bytes(_QWEN2_SPLIT),
    "deepseek-r1-qwen": lambda: _split_then_bytes(_QWEN2_SPLIT),
}


# Texts of tokens that end a generation in the chat formats we know, besides the declared EOS,
# EOT and EOM ids; the same list as llama.cpp's end-of-generation rule. A reply read
# "Red<|im_start|>user\nBronze" when only the declared EOS stopped generation.
EOG_TEXTS = frozenset({
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
    "<|end_of_text|>", "</s>", "<EOT>", "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>",
})


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer` with the model's BOS/EOS rules and chat template.

    `eos_token_ids` holds every end-of-generation token of the vocabulary: the declared ones
    plus any special token whose text is in EOG_TEXTS."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token_id: int | None,
        eos_token_ids: Sequence[int],
        add_bos: bool,
        chat_template: ChatTemplate | None,
    ):
        self.backend = backend
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = bos_token_id
        listed = [i for text in sorted(EOG_TEXTS) if (i := backend.token_to_id(text)) is not None]
        self.eos_token_ids = tuple(dict.fromkeys([*eos_token_ids, *listed]))
        self.add_bos = add_bos and bos_token_id is not None
        self.chat_template = chat_template

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids for `text`. Special tokens written in the text (`<|im_start|>`) are matched
        as single tokens, as transformers does; BOS is prepended iff add_special_tokens and add_bos."""
        if len(text) >= GIL_FREE_CHARS:
            ids = self.backend.encode_batch_fast([text], add_special_tokens=False)[0].ids
        else:
            ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos:
            return [self.bos_token_id, *ids]
        return ids

    @cached_property
    def max_chars_per_token(self) -> int | None:
        """The most characters one token covers, or None if unbounded (model/token_span.py)."""
        return max_chars_per_token(self.backend)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        if len(ids) >= GIL_FREE_CHARS // 4:  # the batch call releases the GIL here too (/detokenize, echo)
            return self.backend.decode_batch([list(ids)], skip_special_tokens=skip_special_tokens)[0]
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True, tools: list | None = None
    ) -> str:
        """Render `messages` with the model's own template; ModelError if it has none."""
        if self.chat_template is None:
            raise ModelError("this model has no chat template; send a plain completion prompt instead")
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt, tools=tools)

    @classmethod
    def from_gguf(cls, metadata: dict[str, Any]) -> Tokenizer:
        """Rebuild the tokenizer from GGUF metadata (a `GGUFFile.metadata` dict)."""
        kind = metadata.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise UnsupportedModelError(f"GGUF tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2')")
        tokens: list[str] = metadata.get("tokenizer.ggml.tokens") or []
        merges: list[str] = metadata.get("tokenizer.ggml.merges") or []
        token_types: list[int] = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        if not tokens or not merges:
            raise ModelFormatError("GGUF tokenizer has no tokens or merges")
        backend = tokenizers.Tokenizer(
            models.BPE(
                vocab={token: i for i, token in enumerate(tokens)},
                merges=[tuple(merge.split(" ", 1)) for merge in merges],
                fuse_unk=False,
                byte_fallback=False,
            )
        )
        backend.pre_tokenizer = _PRE_TOKENIZERS.get(metadata.get("tokenizer.ggml.pre"), _gpt2_bytes)()
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, token_types) if k == _CONTROL]
        )
        backend.add_tokens(
            [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, token_types) if k == _USER_DEFINED]
        )

        def token(key: str) -> int | None:
            value = metadata.get(f"tokenizer.ggml.{key}")
            return int(value) if value is not None and 0 <= int(value) < len(tokens) else None

        bos, eos = token("bos_token_id"), token("eos_token_id")
        eos_ids = [i for i in (eos, token("eot_token_id"), token("eom_token_id")) if i is not None]
        template = metadata.get("tokenizer.chat_template")
        special = {"bos_token": tokens[bos] if bos is not None else None, "eos_token": tokens[eos] if eos is not None else None}
        return cls(
            backend,
            bos_token_id=bos,
            eos_token_ids=eos_ids,
            add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=ChatTemplate(template, special) if template else None,
        )

    @classmethod
    def from_dir(cls, path: Path) -> Tokenizer:
        """Load tokenizer.json (+ tokenizer_config.json, chat_template.jinja, config.json and
        generation_config.json for BOS/EOS) from a Hugging Face model directory."""
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise ModelFormatError(f"no tokenizer.json in {path}")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:  # the Rust side raises a bare Exception
            raise ModelFormatError(f"unreadable tokenizer.json in {path}: {e}") from None
        config = _read_json(path / "tokenizer_config.json")
        model_config = _read_json(path / "config.json")
        generation = _read_json(path / "generation_config.json")

        bos_token, eos_token = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
        bos = backend.token_to_id(bos_token) if bos_token else model_config.get("bos_token_id")
        eos_ids = [backend.token_to_id(eos_token)] if eos_token else []
        for source in (generation, model_config):
            value = source.get("eos_token_id")
            eos_ids += value if isinstance(value, list) else [value]
        add_bos = config.get("add_bos_token")
        if add_bos is None:
            add_bos = _post_processor_adds(backend, bos_token)
        return cls(
            backend,
            bos_token_id=bos,
            eos_token_ids=[i for i in eos_ids if i is not None],
            add_bos=bool(add_bos),
            chat_template=_dir_chat_template(path, config, bos_token, eos_token),
        )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"unreadable {path}: {e}") from None


def _token_text(token: Any) -> str | None:
    """tokenizer_config.json spells a special token as a string or an AddedToken dict."""
    return token.get("content") if isinstance(token, dict) else token


def _post_processor_adds(backend: tokenizers.Tokenizer, bos_token: str | None) -> bool:
    """Whether the tokenizer.json post-processor prepends BOS (Llama 3 style files say so only there)."""
    if bos_token is None:
        return False
    processor = json.loads(backend.to_str()).get("post_processor") or {}
    processors = processor.get("processors", [processor])
    for p in processors:
        for piece in p.get("single", []):
            if piece.get("SpecialToken", {}).get("id") == bos_token:
                return True
    return False


def _dir_chat_template(path: Path, config: dict, bos: str | None, eos: str | None) -> ChatTemplate | None:
    """transformers 5 writes chat_template.jinja; older versions put it in tokenizer_config.json,
    possibly as a list of named templates, of which "default" is the one to use."""
    source = config.get("chat_template")
    if (path / "chat_template.jinja").is_file():
        source = (path / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(source, list):
        source = next((t.get("template") for t in source if t.get("name") == "default"), None)
    return ChatTemplate(source, {"bos_token": bos, "eos_token": eos}) if source else None
