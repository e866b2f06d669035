"""The engine on a CUDA GPU: logits against transformers, bitwise prefix reuse, generation.

Skipped where torch sees no GPU. Self-contained (a random-weight model and a tokenizer trained
here), so it runs on a GPU machine that has neither the embedded model nor network access.
"""

from __future__ import annotations

import json

import pytest
import torch

from promptcache.cache.config import CacheConfig
from promptcache.engine.api import CacheOptions, SamplingParams
from promptcache.engine.engine import Engine
from promptcache.model.llama import LlamaModel
from promptcache.model.source import open_model

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("toy-cuda")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 20, "prompt caching " * 20], trainer)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False, "tokenizer_class": "PreTrainedTokenizerFast"}))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-3), (torch.bfloat16, 0.15)])
def test_cuda_logits_match_transformers(toy_model_dir, dtype, atol):
    from transformers import AutoModelForCausalLM

    source = open_model(toy_model_dir)
    ours = LlamaModel(source.config, source.load_state_dict(), dtype=dtype, device=CUDA)
    theirs = AutoModelForCausalLM.from_pretrained(toy_model_dir, dtype=dtype).to(CUDA).eval()
    tokens = torch.randint(2, source.config.vocab_size, (300,), generator=torch.Generator().manual_seed(1))
    kv = ours.new_kv(2, 512)
    whole = ours.prefill(tokens.to(CUDA), 0, 0, kv)
    ours.prefill(tokens[:128].to(CUDA), 0, 1, kv, want_logits=False)
    reused = ours.prefill(tokens[128:].to(CUDA), 128, 1, kv)
    with torch.no_grad():
        reference = theirs(tokens[None].to(CUDA)).logits[0, -1].float()
    assert (whole - reference).abs().max().item() < atol
    assert (reused - reference).abs().max().item() < atol


def test_cuda_generation_identical_with_cache(toy_model_dir):
    cached = Engine.from_model(str(toy_model_dir), device="cuda", dtype="bfloat16", prefill_chunk=64,
                               cache_config=CacheConfig(max_bytes=32 * 2**20))
    uncached = Engine.from_model(str(toy_model_dir), device="cuda", dtype="bfloat16", prefill_chunk=64,
                                 cache_config=None)
    gen = torch.Generator().manual_seed(2)
    vocab = cached.model.config.vocab_size
    shared = torch.randint(2, vocab, (200,), generator=gen).tolist()
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    cached.generate([shared + [2, 3, 4]], params)
    prompt = shared + [5, 6, 7, 8]
    warm = cached.generate([prompt], params)[0]
    cold = uncached.generate([prompt], params)[0]
    assert warm.num_cached_tokens >= 176
    assert warm.token_ids == cold.token_ids
    batch = cached.generate([prompt, shared + [9], shared[:50]], params, CacheOptions(salt="b"))
    assert all(len(c.token_ids) == 10 for c in batch)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-3), (torch.bfloat16, 0.25)])
@pytest.mark.parametrize("lengths", [{0: 250, 2: 90, 3: 17}, {0: 204}])
def test_cuda_graph_decode_matches_eager(toy_model_dir, dtype, atol, lengths):
    """Decode steps replayed from CUDA graphs (keys read up to a bucket, masked) agree with
    eager steps, across bucket boundaries and for a batch spanning non-adjacent slots."""
    source = open_model(toy_model_dir)
    state = source.load_state_dict()
    graphed = LlamaModel(source.config, state, dtype=dtype, device=CUDA)
    eager = LlamaModel(source.config, state, dtype=dtype, device=CUDA, use_cuda_graphs=False)
    assert graphed.graphs is not None and eager.graphs is None
    kv_g, kv_e = graphed.new_kv(8, 2048), eager.new_kv(8, 2048)
    gen = torch.Generator().manual_seed(4)
    for slot, n in lengths.items():
        prompt = torch.randint(2, source.config.vocab_size, (n,), generator=gen).to(CUDA)
        graphed.prefill(prompt, 0, slot, kv_g, want_logits=False)
        eager.prefill(prompt, 0, slot, kv_e, want_logits=False)
    slots, positions = list(lengths), list(lengths.values())
    for step in range(12):  # slot 0 crosses the 256-key bucket boundary
        tokens = torch.randint(2, source.config.vocab_size, (len(slots),), generator=gen).to(CUDA)
        a = graphed.decode(tokens, [p + step for p in positions], slots, kv_g)
        b = eager.decode(tokens, [p + step for p in positions], slots, kv_e)
        assert (a - b).abs().max().item() < atol, step
        assert torch.isfinite(a).all()


@pytest.mark.parametrize("start,count", [(128, 64), (200, 17), (500, 256)])
def test_cuda_graph_suffix_prefill_matches_eager(toy_model_dir, start, count):
    """A short prefill after cached KV, replayed from a CUDA graph with padding rows, gives the
    eager logits and leaves the real positions' KV as eager computes it."""
    source = open_model(toy_model_dir)
    state = source.load_state_dict()
    graphed = LlamaModel(source.config, state, dtype=torch.float32, device=CUDA)
    eager = LlamaModel(source.config, state, dtype=torch.float32, device=CUDA, use_cuda_graphs=False)
    kv_g, kv_e = graphed.new_kv(2, 1024), eager.new_kv(2, 1024)
    tokens = torch.randint(2, source.config.vocab_size, (start + count,), generator=torch.Generator().manual_seed(5)).to(CUDA)
    for model, kv in ((graphed, kv_g), (eager, kv_e)):
        model.prefill(tokens[:start], 0, 1, kv, want_logits=False)
    for _ in range(2):  # the second call replays the recorded graph
        a = graphed.prefill(tokens[start:], start, 1, kv_g)
    b = eager.prefill(tokens[start:], start, 1, kv_e)
    assert graphed.prefill_graphs._graphs
    assert (a - b).abs().max().item() < 2e-3
    assert (kv_g[:, :, 1, :, : start + count] - kv_e[:, :, 1, :, : start + count]).abs().max().item() < 2e-3
