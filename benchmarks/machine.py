"""This machine's own limits, measured in the same run as the figures they judge.

Machines differ, so a benchmark reports efficiency as a ratio: achieved FLOP/s over the peak of a
large torch matmul in the same dtype, and bytes read per decode step over the bandwidth of a
large copy. Those ratios travel between machines; raw tokens/s do not.
"""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Seconds of the fastest of `repeats` calls (the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(dtype: torch.dtype, device: torch.device) -> float:
    """FLOP/s of a large square matmul."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = best_time(lambda: a @ b, device, repeats=3 if device.type == "cpu" else 10)
    return 2 * n**3 / seconds


def copy_bandwidth(device: torch.device) -> float:
    """Memory bandwidth of a large tensor copy: bytes read plus bytes written, per second
    (about 33 GB/s on the 2-core CPUs we develop on, about 3 TB/s on an H100)."""
    n = (512 if device.type == "cpu" else 4096) * 2**20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    seconds = best_time(lambda: dst.copy_(src), device, repeats=5)
    return 2 * n * 4 / seconds


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform

    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
