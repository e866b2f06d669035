"""The GGUF loader must hand the model code exactly what transformers loads from the same file:
same names, same HF layouts, same dequantized values, Q/K permutation undone."""

from __future__ import annotations

import pytest
import torch

from promptcache.model.gguf_loader import hf_name, read_gguf, unpermute_qk


@pytest.fixture(scope="module")
def hf_model(smollm2_path):
    """transformers' own GGUF loading, the reference; loaded once (it takes seconds)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name, dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_state_dict(hf_model):
    return {name: t.detach() for name, t in hf_model.state_dict().items()}


@pytest.fixture(scope="module")
def our_state_dict(smollm2_source):
    return smollm2_source.load_state_dict()


@pytest.mark.slow
def test_state_dict_equals_transformers(our_state_dict, hf_state_dict):
    # transformers lists the tied lm_head as its own entry; we leave it out (tie_word_embeddings).
    assert set(our_state_dict) == set(hf_state_dict) - {"lm_head.weight"}
    for name, ours in our_state_dict.items():
        theirs = hf_state_dict[name]
        assert ours.dtype == torch.float32, name
        assert ours.shape == theirs.shape, name
        assert torch.equal(ours, theirs), f"{name}: max abs diff {(ours - theirs).abs().max()}"
    assert torch.equal(hf_state_dict["lm_head.weight"], our_state_dict["model.embed_tokens.weight"])


@pytest.mark.slow
def test_smollm2_config(smollm2_source):
    c = smollm2_source.config
    assert (c.architecture, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == ("llama", 30, 9, 3, 64)
    assert (c.hidden_size, c.intermediate_size, c.vocab_size, c.context_length) == (576, 1536, 49152, 8192)
    assert c.tie_word_embeddings and not c.attention_bias and c.rope_scaling is None
    assert c.rope_theta == 100000.0
    assert c.rms_norm_eps == pytest.approx(1e-5)
    assert c.kv_bytes_per_token(2) == 2 * 30 * 3 * 64 * 2
    assert smollm2_source.name == "SmolLM2-135M-Instruct" and smollm2_source.format == "gguf"


@pytest.mark.slow
def test_config_matches_transformers(smollm2_source, hf_model):
    hf = hf_model.config
    c = smollm2_source.config
    assert (c.num_layers, c.num_heads, c.num_kv_heads, c.hidden_size) == (
        hf.num_hidden_layers,
        hf.num_attention_heads,
        hf.num_key_value_heads,
        hf.hidden_size,
    )
    assert c.rms_norm_eps == hf.rms_norm_eps
    assert c.context_length == hf.max_position_embeddings
    assert c.rope_theta == hf.rope_parameters["rope_theta"]
    assert c.tie_word_embeddings == hf.tie_word_embeddings


@pytest.mark.slow
def test_opening_reads_no_weights(smollm2_path, monkeypatch):
    """Opening is cheap because it parses the header only; tensors are read by load_state_dict.

    (How long opening takes is measured by benchmarks/loading.py, not asserted here.)"""
    from promptcache.model import gguf_loader
    from promptcache.model.source import open_model

    def no_weights(*args, **kwargs):
        raise AssertionError("opening a model read its weights")

    monkeypatch.setattr(gguf_loader, "_dequantize", no_weights)
    monkeypatch.setattr(gguf_loader, "load_gguf_state_dict", no_weights)
    source = open_model(smollm2_path)
    assert source._tensor_count == len(read_gguf(smollm2_path).tensors) == 272
    with pytest.raises(AssertionError, match="read its weights"):
        source.load_state_dict()  # the weights are read here, and only here


def _llama_cpp_permute(weights: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf.py's permute(), which the loader must invert."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape
    )


@pytest.mark.parametrize("n_head,head_dim,cols", [(9, 64, 576), (3, 64, 576), (4, 16, 1), (1, 8, 3)])
def test_unpermute_inverts_llama_cpp_permute(n_head, head_dim, cols):
    weights = torch.randn(n_head * head_dim, cols)
    assert torch.equal(unpermute_qk(_llama_cpp_permute(weights, n_head), n_head), weights)
    bias = torch.randn(n_head * head_dim)
    assert torch.equal(unpermute_qk(_llama_cpp_permute(bias, n_head), n_head), bias)


@pytest.mark.parametrize(
    "gguf_name,expected",
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
        ("blk.12.attn_q.bias", "model.layers.12.self_attn.q_proj.bias"),
        ("blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"),
        ("blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"),
        ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ("blk.1.ffn_gate_exps.weight", None),
        ("rope_freqs.weight", None),
    ],
)
def test_tensor_names(gguf_name, expected):
    assert hf_name(gguf_name) == expected
