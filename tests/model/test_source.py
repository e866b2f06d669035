"""open_model's identity guarantees: the fingerprint namespaces cached KV blocks, so it must be
stable for the same weights and change when any part of them changes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from promptcache.model.source import embedded_model_path, open_model, weights_fingerprint


@pytest.mark.slow
def test_fingerprint_is_stable_across_processes(smollm2_source):
    code = "from promptcache.model.source import open_model; print(open_model().fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == smollm2_source.fingerprint
    assert len(out) == 64 and int(out, 16) >= 0


@pytest.mark.slow
def test_fingerprint_is_cheap(smollm2_source):
    start = time.perf_counter()
    weights_fingerprint("gguf", [smollm2_source.path], smollm2_source.config)
    assert time.perf_counter() - start < 0.2


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
