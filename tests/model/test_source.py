"""open_model's identity guarantees: the fingerprint namespaces cached KV blocks, so it must be
stable for the same weights and change when any part of them changes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from promptcache.model import source
from promptcache.model.config import ModelConfig
from promptcache.model.source import embedded_model_path, open_model, weights_fingerprint


@pytest.mark.slow
def test_fingerprint_is_stable_across_processes(smollm2_source):
    code = "from promptcache.model.source import open_model; print(open_model().fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == smollm2_source.fingerprint
    assert len(out) == 64 and int(out, 16) >= 0


TINY_CONFIG = ModelConfig("llama", 32, 8, 16, 1, 2, 1, 4, 1e-5, 10000.0, None, 64, True, False)


class CountingOpen:
    """Stands in for `open` inside promptcache.model.source and counts the bytes read."""

    def __init__(self) -> None:
        self.bytes_read = 0
        self.reads = 0

    def __call__(self, *args, **kwargs):
        counter = self
        real = open(*args, **kwargs)

        class Counted:
            def read(self, n=-1):
                data = real.read(n)
                counter.bytes_read += len(data)
                counter.reads += 1
                return data

            def __getattr__(self, name):
                return getattr(real, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                real.close()

        return Counted()


def test_fingerprint_reads_a_fixed_amount_whatever_the_file_size(tmp_path, monkeypatch):
    """Why opening a model is cheap: the fingerprint reads 2 MiB + 16 x 4 KiB, even from an 8 GiB file.

    (How long that takes is a benchmark's business: benchmarks/loading.py.)"""
    counting = CountingOpen()
    monkeypatch.setattr(source, "open", counting, raising=False)
    for size in (3 * 2**20, 8 * 2**30):
        big = tmp_path / f"weights-{size}.gguf"
        with open(big, "wb") as f:
            f.truncate(size)  # sparse: no disk is used
        counting.bytes_read = counting.reads = 0
        weights_fingerprint("gguf", [big], TINY_CONFIG)
        assert counting.bytes_read <= 2 * 2**20 + 16 * 4096
        assert counting.reads == 18
    assert counting.bytes_read == 2 * 2**20 + 16 * 4096  # first and last MiB, 16 samples


@pytest.mark.slow
@pytest.mark.parametrize("where", [0.3, 0.5, 0.999])
def test_fingerprint_sees_changed_weights(tmp_path, smollm2_source, where):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2_source.path, copy)
    assert weights_fingerprint("gguf", [copy], smollm2_source.config) == smollm2_source.fingerprint
    size = copy.stat().st_size
    # Flip a byte in every sampled region's neighbourhood would be luck; flip the ones we sample.
    stride = size // 17
    offset = int(size * where) if where > 0.99 else stride * round(where * 17)
    with open(copy, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert weights_fingerprint("gguf", [copy], smollm2_source.config) != smollm2_source.fingerprint


@pytest.mark.slow
def test_embedded_model_is_the_default(smollm2_source):
    assert embedded_model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert open_model().fingerprint == smollm2_source.fingerprint
