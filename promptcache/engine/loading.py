"""From a model path to a ready `LlamaModel`: device and dtype resolution, weight loading."""

from __future__ import annotations

import torch

from promptcache.model.llama import LlamaModel
from promptcache.model.source import ModelSource

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}

# The serving default, chosen by measurement (docs/benchmarks.md): on CPUs with bf16 matrix
# units, bfloat16 prefilled 1.9x and decoded 1.4-1.7x faster than float32. Its greedy replies
# matched the float32 reference in 27-30 of 40 prompts (32 tokens each), departing only at the
# model's near-ties (benchmarks/quality.py), and the cache invariant holds bitwise in it as in
# float32. On CUDA bf16 is the usual choice.
DEFAULT_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return DEFAULT_DTYPE[device.type]
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32 or bfloat16")
    return DTYPES[dtype]


def load_model(source: ModelSource, *, dtype: torch.dtype, device: torch.device,
               progress: bool = False, quantize: str | None = None, deterministic: bool = True,
               decode_threads: int | None = None) -> LlamaModel:
    state = source.load_state_dict(progress=progress)
    return LlamaModel(source.config, state, dtype=dtype, device=device, quantize=quantize,
                      deterministic=deterministic, decode_threads=decode_threads)
