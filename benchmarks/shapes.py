"""Model shapes for random-weight benchmarks (speed does not depend on the weights' values)."""

from __future__ import annotations

import torch

from promptcache.model.config import ModelConfig

SHAPES = {
    "llama-3.2-1b": ModelConfig(
        architecture="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
        num_heads=32, num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        context_length=8192, tie_word_embeddings=True, attention_bias=False),
    "llama-3.1-8b": ModelConfig(
        architecture="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
        num_heads=32, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        context_length=8192, tie_word_embeddings=False, attention_bias=False),
}


def random_state_dict(c: ModelConfig, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Hugging Face-named random weights, made directly in the target dtype and device."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, device=device, dtype=dtype) * 0.02)

    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    state = {"model.embed_tokens.weight": rand(c.vocab_size, c.hidden_size),
             "model.norm.weight": torch.ones(c.hidden_size, device=device, dtype=dtype)}
    if not c.tie_word_embeddings:
        state["lm_head.weight"] = rand(c.vocab_size, c.hidden_size)
    for i in range(c.num_layers):
        p = f"model.layers.{i}."
        state.update({
            p + "input_layernorm.weight": torch.ones(c.hidden_size, device=device, dtype=dtype),
            p + "post_attention_layernorm.weight": torch.ones(c.hidden_size, device=device, dtype=dtype),
            p + "self_attn.q_proj.weight": rand(q, c.hidden_size),
            p + "self_attn.k_proj.weight": rand(kv, c.hidden_size),
            p + "self_attn.v_proj.weight": rand(kv, c.hidden_size),
            p + "self_attn.o_proj.weight": rand(c.hidden_size, q),
            p + "mlp.gate_proj.weight": rand(c.intermediate_size, c.hidden_size),
            p + "mlp.up_proj.weight": rand(c.intermediate_size, c.hidden_size),
            p + "mlp.down_proj.weight": rand(c.hidden_size, c.intermediate_size),
        })
    return state


def hf_config(c: ModelConfig):
    """The same shape as a transformers LlamaConfig (for the --compare runs)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                       num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                       num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_norm_eps,
                       rope_theta=c.rope_theta, rope_scaling=c.rope_scaling,
                       max_position_embeddings=c.context_length, tie_word_embeddings=c.tie_word_embeddings,
                       attention_bias=c.attention_bias)


def flops_per_prefill(c: ModelConfig, tokens: int) -> float:
    """Matmul FLOPs of a causal prefill of `tokens`: projections, MLP, attention, one head row."""
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    per_token = 2 * c.hidden_size * (q + 2 * kv + q) + 2 * 3 * c.hidden_size * c.intermediate_size
    attention = 2 * 2 * c.num_heads * c.head_dim * tokens * (tokens + 1) / 2  # QK^T and PV, causal
    return c.num_layers * (per_token * tokens + attention) + 2 * c.hidden_size * c.vocab_size


def weight_bytes(c: ModelConfig, dtype_bytes: int) -> int:
    """Bytes of weights one decode step reads (every matmul weight plus the output head)."""
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    per_layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    return (c.num_layers * per_layer + c.vocab_size * c.hidden_size + c.hidden_size) * dtype_bytes
