"""The shape of a Llama-family model, independent of the file format it came from.

Both loaders (GGUF metadata, Hugging Face config.json) produce a `ModelConfig`; the model code
and the KV pool read nothing else. Checkpoint quirks (old `rope_scaling` vs. transformers 5
`rope_parameters`, `type` vs. `rope_type`, a missing `head_dim`) are settled here, once, so
`forward` never has to care which format the weights came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptcache.model.errors import ModelFormatError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")

# config.json keys without which the model's shape is unknown.
_REQUIRED_HF_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)

# Defaults transformers itself applies when a key is absent from config.json.
_DEFAULT_CONTEXT_LENGTH = {"llama": 2048, "mistral": 32768, "qwen2": 32768}


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a decoder-only Llama-family transformer."""

    architecture: str  # "llama" | "mistral" | "qwen2"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None  # HF style, always keyed by "rope_type"; None for plain RoPE
    context_length: int
    tie_word_embeddings: bool
    attention_bias: bool  # q/k/v projections carry biases (qwen2)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes of K and V one token occupies across all layers; sizes the KV pool."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    @staticmethod
    def from_hf_dict(d: dict[str, Any]) -> ModelConfig:
        """Read a Hugging Face config.json dict (transformers 4 or 5 layout).

        Raises UnsupportedModelError for a model_type outside SUPPORTED_ARCHITECTURES, and
        ModelFormatError when a key needed for the shape is missing.
        """
        architecture = d.get("model_type")
        check_architecture(architecture, "config.json")
        missing = [key for key in _REQUIRED_HF_KEYS if key not in d]
        if missing:
            raise ModelFormatError(f"config.json is missing required keys: {', '.join(missing)}")
        if d.get("mlp_bias") or (architecture != "qwen2" and d.get("attention_bias")):
            raise UnsupportedModelError(
                f"{architecture} with attention_bias/mlp_bias (biases on o_proj or the MLP) is not supported"
            )
        num_heads = int(d["num_attention_heads"])
        hidden_size = int(d["hidden_size"])
        rope_theta, rope_scaling = _hf_rope(d)
        return ModelConfig(
            architecture=architecture,
            vocab_size=int(d["vocab_size"]),
            hidden_size=hidden_size,
            intermediate_size=int(d["intermediate_size"]),
            num_layers=int(d["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(d.get("num_key_value_heads") or num_heads),
            # Mistral configs may carry "head_dim": null, meaning the default.
            head_dim=int(d.get("head_dim") or hidden_size // num_heads),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            context_length=int(d.get("max_position_embeddings") or _DEFAULT_CONTEXT_LENGTH[architecture]),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; its config has no key saying so.
            attention_bias=architecture == "qwen2",
        )


def check_architecture(architecture: object, where: str) -> None:
    """Raise UnsupportedModelError naming `architecture` unless the model code can run it."""
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"unsupported model architecture {architecture!r} in {where} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )


def normalize_rope_scaling(scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """HF-style rope scaling keyed by "rope_type", or None when RoPE is unscaled.

    Older configs spell the key "type"; transformers 5 folds rope_theta into the same dict and
    writes {"rope_type": "default"} for plain RoPE. All three collapse to one shape here.
    """
    if not scaling:
        return None
    scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
    rope_type = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    scaling.pop("type", None)
    if rope_type == "default":
        return None
    return {"rope_type": rope_type, **scaling}


def _hf_rope(d: dict[str, Any]) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either the transformers 4 or 5 layout."""
    parameters = d.get("rope_parameters") or {}
    theta = parameters.get("rope_theta", d.get("rope_theta", 10000.0))
    scaling = d.get("rope_scaling") or parameters
    return float(theta), normalize_rope_scaling(scaling)
