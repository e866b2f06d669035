"""Reading GGUF files: metadata, the model config, and float32 weights under Hugging Face names.

The header is parsed here with `struct` over a memory map rather than with `gguf.GGUFReader`:
GGUFReader builds numpy views for every element of the 49k-entry vocabulary and merge arrays and
takes 2-3 s on SmolLM2, while opening a model must be cheap (the CLI's `info` opens it, and so
does every test). Tensor data is only touched by `load_gguf_state_dict`, which dequantizes with
`gguf.quants.dequantize` and undoes llama.cpp's Q/K row permutation, so the model code sees the
same tensors a Hugging Face checkpoint would give it.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from promptcache.model.config import ModelConfig, check_architecture, normalize_rope_scaling
from promptcache.model.errors import ModelFormatError, UnsupportedModelError

_MAGIC = b"GGUF"
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY_TYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9

# GGUF tensor name (per-layer part after "blk.{i}.") -> Hugging Face parameter name.
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# Architectures whose converter permuted Q/K rows for llama.cpp's rotary layout.
_PERMUTED_ARCHITECTURES = {"llama", "mistral"}


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor's bytes are in the file and how they are encoded."""

    name: str
    shape: tuple[int, ...]  # torch order: (out_features, in_features)
    ggml_type: int
    offset: int  # absolute, from the start of the file
    nbytes: int


@dataclass(frozen=True)
class GGUFFile:
    """A parsed GGUF header. Owns no file handle: tensors are re-mapped on load."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "")

    def config(self) -> ModelConfig:
        return gguf_config(self)


def read_gguf(path: Path) -> GGUFFile:
    """Parse the header of a GGUF file; raise ModelFormatError if it is corrupt or truncated."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
            return _parse(path, blob)
    except ModelFormatError:
        raise
    except (ValueError, struct.error, UnicodeDecodeError, IndexError, OverflowError, KeyError, MemoryError) as e:
        raise ModelFormatError(f"corrupt or truncated GGUF file {path}: {e}") from None
    except OSError as e:
        raise ModelFormatError(f"cannot read GGUF file {path}: {e.strerror or e}") from None


def _parse(path: Path, blob: mmap.mmap) -> GGUFFile:
    size = len(blob)
    if blob[:4] != _MAGIC:
        raise ModelFormatError(f"not a GGUF file (bad magic bytes): {path}")
    version, tensor_count, kv_count = struct.unpack_from("<IQQ", blob, 4)
    if version not in (2, 3):
        raise ModelFormatError(f"unsupported GGUF version {version} in {path}")
    reader = _HeaderReader(blob, 24, size)
    reader.check_count(kv_count, 12)
    metadata = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("<I"))
    reader.check_count(tensor_count, 24)
    entries = []
    for _ in range(tensor_count):
        name = reader.string()
        dims = [reader.scalar("<Q") for _ in range(reader.scalar("<I"))]
        ggml_type, offset = reader.scalar("<I"), reader.scalar("<Q")
        entries.append((name, tuple(reversed(dims)), ggml_type, offset))
    alignment = int(metadata.get("general.alignment", 32))
    data_start = -(-reader.pos // alignment) * alignment
    tensors = {}
    for name, shape, ggml_type, offset in entries:
        nbytes = _tensor_nbytes(name, shape, ggml_type)
        start = data_start + offset
        if start + nbytes > size:
            raise ModelFormatError(f"truncated GGUF file {path}: tensor {name} extends past the end of the file")
        tensors[name] = GGUFTensorInfo(name, shape, ggml_type, start, nbytes)
    return GGUFFile(path=path, metadata=metadata, tensors=tensors)


class _HeaderReader:
    """A cursor over the header that refuses to read past the end of the file.

    Raises ValueError (turned into ModelFormatError naming the file by read_gguf)."""

    def __init__(self, blob: mmap.mmap, pos: int, size: int):
        self.blob, self.pos, self.size = blob, pos, size

    def check_count(self, count: int, min_bytes_each: int) -> None:
        # A corrupt count would otherwise make us loop for years before running off the end.
        if count * min_bytes_each > self.size - self.pos:
            raise ValueError(f"count {count} exceeds the file size")

    def scalar(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        if self.pos + length > self.size:
            raise ValueError("metadata runs past the end of the file (truncated?)")
        text = self.blob[self.pos : self.pos + length].decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, value_type: int):
        if value_type in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type != _ARRAY:
            raise ValueError(f"unknown metadata value type {value_type}")
        element_type, count = self.scalar("<I"), self.scalar("<Q")
        if element_type in _NUMPY_TYPES:
            dtype = np.dtype(_NUMPY_TYPES[element_type])
            self.check_count(count, dtype.itemsize)
            values = np.frombuffer(self.blob, dtype=dtype, count=count, offset=self.pos).tolist()
            self.pos += count * dtype.itemsize
            return values
        self.check_count(count, 8 if element_type == _STRING else 12)
        return [self.value(element_type) for _ in range(count)]


def _tensor_nbytes(name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    try:
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"tensor {name} has unknown ggml type {ggml_type}") from None
    elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
    return elements // block_size * type_size


def gguf_config(gguf: GGUFFile) -> ModelConfig:
    """Build a ModelConfig from llama.cpp metadata keys ("{arch}.block_count", ...)."""
    md, arch = gguf.metadata, gguf.architecture
    check_architecture(arch or None, f"GGUF file {gguf.path} (general.architecture)")
    if "rope_freqs.weight" in gguf.tensors:
        # llama.cpp stores Llama 3.1-style rope scaling as a tensor of per-frequency factors.
        raise UnsupportedModelError(f"rope scaling stored as rope_freqs (llama3-style) is not supported: {gguf.path}")

    def get(key: str, default: Any = None) -> Any:
        value = md.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelFormatError(f"GGUF file {gguf.path} is missing metadata key {arch}.{key}")
        return value

    num_heads = int(get("attention.head_count"))
    hidden_size = int(get("embedding_length"))
    embed = gguf.tensors.get("token_embd.weight")
    if embed is None:
        raise ModelFormatError(f"GGUF file {gguf.path} has no token_embd.weight tensor")
    scaling_type = md.get(f"{arch}.rope.scaling.type", "none")
    rope_scaling = None
    if scaling_type not in ("none", None):
        rope_scaling = {"rope_type": scaling_type, "factor": float(get("rope.scaling.factor"))}
        if f"{arch}.rope.scaling.original_context_length" in md:
            rope_scaling["original_max_position_embeddings"] = int(md[f"{arch}.rope.scaling.original_context_length"])
    return ModelConfig(
        architecture=arch,
        vocab_size=embed.shape[0],
        hidden_size=hidden_size,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=num_heads,
        num_kv_heads=int(get("attention.head_count_kv", num_heads)),
        head_dim=int(get("attention.key_length", hidden_size // num_heads)),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=normalize_rope_scaling(rope_scaling),
        context_length=int(get("context_length", 2048)),
        tie_word_embeddings="output.weight" not in gguf.tensors,
        attention_bias="blk.0.attn_q.bias" in gguf.tensors,
    )


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face parameter name for a GGUF tensor, or None for tensors HF has no slot for."""
    if match := _LAYER_TENSOR.fullmatch(gguf_name):
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}" if part in _LAYER_NAMES else None
    base, _, kind = gguf_name.rpartition(".")
    return f"{_GLOBAL_NAMES[base]}.{kind}" if base in _GLOBAL_NAMES else None


def unpermute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of convert_hf_to_gguf's permute(): llama.cpp interleaves the two rotary halves of
    each head's rows; Hugging Face keeps them as [first half, second half]."""
    rows = weight.shape[0]
    return weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def load_gguf_state_dict(
    gguf: GGUFFile, config: ModelConfig, on_tensor: Callable[[str], None] | None = None
) -> dict[str, torch.Tensor]:
    """Dequantize every tensor to float32 under its Hugging Face name and layout.

    `on_tensor` is called after each tensor (for a progress bar). Returns fresh tensors the
    caller owns; the file is unmapped before returning.
    """
    state: dict[str, torch.Tensor] = {}
    permuted = gguf.architecture in _PERMUTED_ARCHITECTURES
    with open(gguf.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        for info in gguf.tensors.values():
            name = hf_name(info.name)
            if name is None:
                raise ModelFormatError(f"GGUF file {gguf.path} has an unexpected tensor {info.name}")
            tensor = _dequantize(blob, info)
            if permuted and name.endswith(("q_proj.weight", "q_proj.bias")):
                tensor = unpermute_qk(tensor, config.num_heads)
            elif permuted and name.endswith(("k_proj.weight", "k_proj.bias")):
                tensor = unpermute_qk(tensor, config.num_kv_heads)
            state[name] = tensor
            if on_tensor is not None:
                on_tensor(name)
    return state


def _dequantize(blob: mmap.mmap, info: GGUFTensorInfo) -> torch.Tensor:
    """One tensor as a float32 copy; no view of `blob` survives the call (so it can be closed)."""
    raw = np.frombuffer(blob, dtype=np.uint8, count=info.nbytes, offset=info.offset)
    num_rows = int(np.prod(info.shape[:-1], dtype=np.int64))
    values = dequantize(raw.reshape(num_rows, info.nbytes // num_rows), GGMLQuantizationType(info.ggml_type))
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(info.shape))
