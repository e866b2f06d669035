"""The quality gate of a quantized decode path against bfloat16, on SmolLM2 on the CPU.

    python benchmarks/kl.py [--quantize int8] [--rows 8] [--tokens 256] [--json]

1. Mean KL divergence KL(bf16 || quantized) of the next-token distributions over a fixed text
   (docs/design.md as of commit 67c3b70, cut into `--rows` segments): each segment's first
   PREFILL tokens are prefilled, the rest are fed one decode step at a time (teacher forcing,
   all segments batched, as the engine decodes), so every distribution comes from decode, where
   quantization applies. Also the rate at which both pick the same top token.
2. Greedy agreement on the determinism tests' cases (tests/engine/test_determinism_smollm2.py,
   the bfloat16 cases): the share of cases whose 8 greedy tokens are identical.
3. The Paris test: the reply to "What is the capital of France?" must contain "Paris".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TEXT_COMMIT, TEXT_PATH = "67c3b70", "docs/design.md"
PREFILL = 16


def fixed_text() -> str:
    return subprocess.run(["git", "show", f"{TEXT_COMMIT}:{TEXT_PATH}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


@torch.inference_mode()
def decode_log_probs(model, segments: list[list[int]]) -> torch.Tensor:
    """log-softmax (rows, T - PREFILL, V) of every decode position of every segment."""
    B, T = len(segments), len(segments[0])
    kv = model.new_kv(B, T + 1)
    for b, seg in enumerate(segments):
        model.prefill(torch.tensor(seg[:PREFILL]), 0, b, kv, want_logits=False)
    out = []
    for t in range(PREFILL, T):
        logits = model.decode(torch.tensor([s[t] for s in segments]), [t] * B, list(range(B)), kv)
        out.append(torch.log_softmax(logits, dim=-1))
    return torch.stack(out, dim=1)


def greedy_agreement(engines: dict) -> dict:
    from promptcache.engine.api import SamplingParams

    sys.path.insert(0, os.path.join(ROOT, "tests", "engine"))
    from test_determinism_smollm2 import CONFIGS, _cases

    _, _, count, seed = CONFIGS["bfloat16"]
    greedy = SamplingParams(max_tokens=8, ignore_eos=True)
    # A multi-turn case's prompt holds the earlier turn's reply: here its earlier turn and suffix.
    prompts = [case.get("prompt") or case["earlier"] + case["suffix"] for case in _cases(seed, count)]
    replies = {name: [c.token_ids for c in engine.generate(prompts, greedy)] for name, engine in engines.items()}
    names = list(engines)
    same = sum(a == b for a, b in zip(replies[names[0]], replies[names[1]]))
    return {"greedy_cases": len(replies[names[0]]), "greedy_identical": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quantize", default="int8", choices=["int8"])
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256 + PREFILL, help="tokens per segment")
    p.add_argument("--skip-greedy", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from promptcache.engine.api import SamplingParams
    from promptcache.engine.engine import Engine

    engines = {q: Engine.from_model(None, device="cpu", dtype="bfloat16", quantize=q, cache_config=None,
                                    max_batch_size=args.rows, max_seq_len=4096)
               for q in (None, args.quantize)}
    tokenizer = engines[None].tokenizer
    ids = tokenizer.encode(fixed_text(), add_special_tokens=False)
    need = args.rows * args.tokens
    if len(ids) < need:
        raise SystemExit(f"error: the text has {len(ids)} tokens, {need} are needed")
    segments = [ids[i * args.tokens:(i + 1) * args.tokens] for i in range(args.rows)]
    ref, quant = (decode_log_probs(e.model, segments) for e in engines.values())
    kl = (ref.exp() * (ref - quant)).sum(-1)  # (rows, positions)
    report = {"quantize": args.quantize, "positions": kl.numel(), "mean_kl": kl.mean().item(),
              "max_kl": kl.max().item(), "top1_agreement": (ref.argmax(-1) == quant.argmax(-1)).float().mean().item()}
    question = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]),
                                add_special_tokens=False)
    for name, engine in (("bfloat16", engines[None]), (args.quantize, engines[args.quantize])):
        report[f"paris_{name}"] = "Paris" in engine.generate([question], SamplingParams(max_tokens=12))[0].text
    if not args.skip_greedy:
        report.update(greedy_agreement({"bfloat16": engines[None], args.quantize: engines[args.quantize]}))
    print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
