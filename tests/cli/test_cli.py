"""The CLI on bad input: one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from promptcache.engine.loading import DEFAULT_DTYPE
from tests.conftest import make_tiny_llama
from tests.engine.margins import check_margins


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "promptcache.cli", *args], capture_output=True, text=True, timeout=300)


def _assert_clean_error(result, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in message


def test_missing_model_file(tmp_path):
    _assert_clean_error(run("generate", "--model", str(tmp_path / "nope.gguf"), "hi"), "nope.gguf")


def test_corrupt_and_truncated_gguf(tmp_path, smollm2_path):
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    _assert_clean_error(run("info", "--model", str(corrupt)), "corrupt.gguf")
    truncated = tmp_path / "truncated.gguf"
    with open(smollm2_path, "rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    _assert_clean_error(run("generate", "--model", str(truncated), "hi"), "truncated.gguf")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    _assert_clean_error(run("info", "--model", str(tmp_path)), "gpt2")


def test_empty_prompt():
    _assert_clean_error(run("generate", "   "), "empty")


def test_prompt_longer_than_the_context(tmp_path, smollm2_hf_tokenizer):
    model = make_tiny_llama(tmp_path, smollm2_hf_tokenizer, max_position_embeddings=64)
    _assert_clean_error(run("generate", "--model", str(model), "--no-chat", "word " * 200), "context length")


@pytest.mark.slow
def test_generate_and_info_work(smollm2_engine):
    """The README's example, in the default configuration (margins checked as in
    tests/engine/test_smollm2.py)."""
    question, answer = "Fill in the blank: The capital of France is ___.", "The capital of France is Paris."
    tok = smollm2_engine.tokenizer
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": question}]), add_special_tokens=False)
    expected = tok.encode(answer, add_special_tokens=False)
    check_margins(smollm2_engine.model, tok, prompt, expected, str(DEFAULT_DTYPE["cpu"]).removeprefix("torch."))
    result = run("generate", "--max-tokens", "20", question)
    assert result.returncode == 0 and result.stdout.strip() == answer
    info = run("info")
    assert info.returncode == 0 and "30" in info.stdout and "46,080" in info.stdout


def test_quantize_option(tmp_path, smollm2_hf_tokenizer):
    """Each --quantize value reaches the model (a bad one is a one-line error); the numerics class
    that cached KV is shared within names it."""
    info = run("info", "--device", "cpu", "--dtype", "bfloat16", "--quantize", "int4+head")
    assert info.returncode == 0 and "bfloat16+int4+head" in info.stdout
    model = make_tiny_llama(tmp_path, smollm2_hf_tokenizer)
    _assert_clean_error(run("generate", "--model", str(model), "--dtype", "bfloat16", "--quantize", "int5", "hi"),
                        "int5", "int4")
    ok = run("generate", "--model", str(model), "--device", "cpu", "--dtype", "bfloat16", "--quantize", "int4", "--max-tokens", "2", "hi")
    assert ok.returncode == 0, ok.stderr[-2000:]
