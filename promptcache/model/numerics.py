"""The numerics class of a loaded model, and the cache namespace's model id built from it.

KV computed by different kernel families is not bitwise interchangeable: the same bfloat16
product rounds differently under AMX, AVX-512 BF16, AVX-512 and AVX2 kernels, and a cache hit
on KV from another family can change a greedy reply. So the prefix cache's namespace carries
the numerics (dtype, decode quantization, the output head's weight precision, kernel family,
torch version) as well as the weights' fingerprint, and a server only reuses KV made by its own
class, unless it is started with `--share-kv-across-numerics` (then a hit may change the
output; docs/design.md). The head writes no KV, but it computes the prompt logprobs that are
stored beside the KV (engine/logprobs_store.py).

`model_id` is the one function that builds that id, so that another process (a storage tier, a
router in front of replicas) gets the same namespace for the same model and numerics.
"""

from __future__ import annotations

import os

import torch

from promptcache.model.head import default_head


# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) -> the family it leaves at most; names from oneDNN's docs.
_ONEDNN_CAPS = {
    "SSE41": "generic", "AVX": "generic", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
    "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512", "AVX512_CORE_BF16": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16", "AVX10_1_512": "avx512_bf16",
}
_RANK = ["generic", "avx2", "avx512", "avx512_bf16", "amx"]


def cpu_kernel_family() -> str:
    """The widest matrix-kernel family this process uses on the CPU: amx, avx512_bf16, avx512,
    avx2 or generic, after any cap set through ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY."""
    capability = torch.backends.cpu.get_cpu_capability()  # honours ATEN_CPU_CAPABILITY
    if capability.startswith("AVX512"):
        family = "avx512"
        if torch.cpu._is_avx512_bf16_supported():
            family = "avx512_bf16"
        if torch.cpu._is_amx_tile_supported():
            family = "amx"
    elif capability.startswith("AVX2"):
        family = "avx2"
    else:
        family = "generic"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap in _ONEDNN_CAPS and _RANK.index(_ONEDNN_CAPS[cap]) < _RANK.index(family):
        family = _ONEDNN_CAPS[cap]
    return family


def kernel_family(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}"
    return cpu_kernel_family()


def numerics_class(dtype: torch.dtype, quantize: str | None, device: torch.device, head: str | None = None) -> str:
    """e.g. 'bfloat16+none+f16head/avx512_bf16/torch2.13': what must match for KV (and the
    prompt logprobs stored beside it, which the output head computes) to be reused bitwise.
    `head` is the output head's weight precision (head.py; None: the default for this dtype)."""
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    kind = f"{str(dtype).removeprefix('torch.')}+{quantize or 'none'}"
    if not (quantize or "").endswith("+head") and (head or default_head(torch.device(device), dtype)) == "float16":
        kind += "+f16head"
    return f"{kind}/{kernel_family(device)}/torch{torch_version}"


def model_id(fingerprint: str, numerics: str, *, share_across_numerics: bool = False) -> str:
    """The model part of every cache key's namespace.

    With share_across_numerics, KV from other kernel families and torch versions is reused (only
    dtype and quantization must match, so the bytes still mean the same thing)."""
    if share_across_numerics:
        numerics = numerics.split("/", 1)[0]
    return f"{fingerprint}:{numerics}"
