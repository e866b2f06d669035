"""Hugging Face directories: tiny random Llama, Mistral and Qwen2 checkpoints written by
transformers must come back with the right config and bit-identical float32 weights."""

from __future__ import annotations

import copy

import pytest
import torch

from promptcache.model.config import ModelConfig
from promptcache.model.errors import ModelFormatError, UnsupportedModelError
from promptcache.model.source import open_model

TINY = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)


def _model(kind: str, **overrides):
    import transformers

    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[kind]
    torch.manual_seed(0)
    return model_cls(config_cls(**{**TINY, **overrides})).to(torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_hf_tokenizer):
    return smollm2_hf_tokenizer


def _save(directory, model, tokenizer, **save_kwargs):
    model.save_pretrained(directory, **save_kwargs)
    tokenizer.save_pretrained(directory)
    return directory


LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 1024,
}
CASES = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama3-rope": ("llama", {"rope_scaling": LLAMA3_SCALING, "rope_theta": 500000.0}),
    "mistral": ("mistral", {"head_dim": 32}),
    "qwen2": ("qwen2", {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip(tmp_path, hf_tokenizer, case):
    kind, overrides = CASES[case]
    model = _model(kind, **copy.deepcopy(overrides))  # transformers edits rope dicts in place
    source = open_model(_save(tmp_path, model, hf_tokenizer))
    hf = model.config
    c = source.config
    assert source.format == "safetensors" and source.name == tmp_path.name
    assert c.architecture == kind
    assert (c.num_layers, c.num_heads, c.num_kv_heads, c.hidden_size) == (2, 4, 2, 64)
    assert c.head_dim == (32 if kind == "mistral" else 16)
    assert c.tie_word_embeddings == bool(overrides.get("tie_word_embeddings", False))
    assert c.attention_bias == (kind == "qwen2")
    assert c.rope_theta == overrides.get("rope_theta", 10000.0)
    assert c.context_length == 4096 and c.rms_norm_eps == 1e-5
    if case == "llama3-rope":
        assert c.rope_scaling == LLAMA3_SCALING
    else:
        assert c.rope_scaling is None

    ours = source.load_state_dict()
    expected = {k: v for k, v in model.state_dict().items() if not (c.tie_word_embeddings and k == "lm_head.weight")}
    assert set(ours) == set(expected)
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, expected[name]), name
    assert hf.vocab_size == c.vocab_size


@pytest.mark.slow
def test_sharded_checkpoint(tmp_path, hf_tokenizer):
    model = _model("llama")
    _save(tmp_path, model, hf_tokenizer, max_shard_size="2MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    source = open_model(tmp_path)
    ours = source.load_state_dict(progress=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(ours[name], tensor), name


@pytest.mark.slow
def test_directory_tokenizer_matches_gguf_tokenizer(tiny_llama_dir, smollm2_tokenizer, hf_tokenizer):
    tokenizer = open_model(tiny_llama_dir).tokenizer
    text = "<|im_start|>user\nHello 123 世界<|im_end|>\n"
    assert tokenizer.encode(text) == smollm2_tokenizer.encode(text) == hf_tokenizer(text)["input_ids"]
    assert tokenizer.bos_token_id == 1 and 2 in tokenizer.eos_token_ids and not tokenizer.add_bos
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(messages) == smollm2_tokenizer.apply_chat_template(messages)


@pytest.mark.slow
def test_missing_tensor_is_format_error(tmp_path, hf_tokenizer):
    from safetensors.torch import load_file, save_file

    _save(tmp_path, _model("llama"), hf_tokenizer)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFormatError, match="model.layers.1.mlp.up_proj.weight"):
        open_model(tmp_path)


@pytest.mark.parametrize(
    "extra,expected",
    [
        ({"rope_theta": 5e5}, (5e5, None)),
        ({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}, (1e6, None)),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, (10000.0, {"rope_type": "linear", "factor": 2.0})),
        (
            {"rope_parameters": {"rope_theta": 1e4, "rope_type": "yarn", "factor": 4.0}},
            (1e4, {"rope_type": "yarn", "factor": 4.0}),
        ),
        ({}, (10000.0, None)),
    ],
)
def test_hf_rope_layouts(extra, expected):
    base = dict(model_type="llama", vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2)
    config = ModelConfig.from_hf_dict({**base, **extra})
    assert (config.rope_theta, config.rope_scaling) == expected


def test_llama_with_output_bias_is_unsupported():
    base = dict(model_type="llama", vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(UnsupportedModelError, match="attention_bias"):
        ModelConfig.from_hf_dict({**base, "attention_bias": True})
