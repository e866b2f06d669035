"""Reading a Hugging Face model directory: config.json plus one or more .safetensors files.

Opening reads config.json and the safetensors headers (tensor names only), so a missing or
misnamed tensor is reported when the model is opened rather than halfway through loading.
Tensors are converted to float32 on load; names are already the Hugging Face ones the model
code expects, so the only quirks fixed here are leftovers some checkpoints carry (rotary
`inv_freq` buffers, an `lm_head.weight` duplicate in tied models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open

from promptcache.model.config import ModelConfig
from promptcache.model.errors import ModelFormatError, ModelNotFoundError

INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class SafetensorsCheckpoint:
    """A directory's config and the tensor name -> shard file map. Holds no open files."""

    path: Path
    config: ModelConfig
    weight_map: dict[str, Path]  # tensor name -> file holding it

    @property
    def files(self) -> list[Path]:
        return sorted(set(self.weight_map.values()))

    @property
    def tensor_count(self) -> int:
        return len(expected_tensor_names(self.config))

    @classmethod
    def open(cls, path: Path) -> SafetensorsCheckpoint:
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelNotFoundError(f"no model in directory {path}: config.json not found")
        try:
            raw_config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"unreadable {config_file}: {e}") from None
        if not isinstance(raw_config, dict):
            raise ModelFormatError(f"{config_file} does not hold a JSON object")
        config = ModelConfig.from_hf_dict(raw_config)
        weight_map = _weight_map(path)
        missing = [name for name in expected_tensor_names(config) if name not in weight_map]
        if missing:
            raise ModelFormatError(f"checkpoint in {path} lacks {len(missing)} tensors, e.g. {missing[0]}")
        return cls(path=path, config=config, weight_map=weight_map)

    def load_state_dict(self, on_tensor: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
        """Every tensor the model uses, as float32, one shard file open at a time."""
        wanted = expected_tensor_names(self.config)
        state: dict[str, torch.Tensor] = {}
        for file in self.files:
            try:
                with safe_open(str(file), framework="pt") as f:
                    for name in f.keys():
                        if name in wanted and self.weight_map[name] == file:
                            state[name] = f.get_tensor(name).to(torch.float32)
                            if on_tensor is not None:
                                on_tensor(name)
            except (SafetensorError, OSError) as e:
                raise ModelFormatError(f"unreadable safetensors file {file}: {e}") from None
        return state


def expected_tensor_names(config: ModelConfig) -> list[str]:
    """The Hugging Face parameter names a Llama-family model of this shape has."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not config.tie_word_embeddings:
        names.append("lm_head.weight")
    for i in range(config.num_layers):
        layer = f"model.layers.{i}"
        names += [f"{layer}.input_layernorm.weight", f"{layer}.post_attention_layernorm.weight"]
        names += [f"{layer}.self_attn.{p}_proj.weight" for p in ("q", "k", "v", "o")]
        names += [f"{layer}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
        if config.attention_bias:
            names += [f"{layer}.self_attn.{p}_proj.bias" for p in ("q", "k", "v")]
    return names


def _weight_map(path: Path) -> dict[str, Path]:
    """Tensor name -> file, from the shard index when there is one, else from every file's header."""
    index_file = path / INDEX_FILE
    if index_file.is_file():
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
            mapping = {name: path / file for name, file in index["weight_map"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFormatError(f"unreadable {index_file}: {e}") from None
        absent = sorted({p.name for p in mapping.values() if not p.is_file()})
        if absent:
            raise ModelFormatError(f"{index_file} names missing shard files: {', '.join(absent)}")
        return mapping
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"no .safetensors files in {path}")
    mapping = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                mapping.update((name, file) for name in f.keys())
        except (SafetensorError, OSError) as e:
            raise ModelFormatError(f"unreadable safetensors file {file}: {e}") from None
    return mapping
