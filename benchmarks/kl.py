"""The quality gate of a quantized decode path (or another output head) against bfloat16, on
SmolLM2 on the CPU.

    python benchmarks/kl.py [--quantize int8,int4,int8+head,int4+head,none] [--head float16]
        [--reference-head float32] [--rows 8] [--tokens 272] [--threads 1] [--json]

Each quantization in `--quantize` ("none": bfloat16 without) is compared against one bfloat16
reference computed once; the engines are built one after another (one in memory beside the
reference at a time). `--head` and `--reference-head` pick the output head's weight precision
(model/head.py) of the candidates and of the reference, each the model's default unless given:
`--reference-head float32 --quantize none` gates the float16 head against the float32 one.

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

from promptcache.model.head import HEADS  # noqa: E402
from promptcache.model.quant import QUANTIZATIONS, parse  # noqa: E402

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


def greedy_replies(engine) -> list[list[int]]:
    """8 greedy tokens for each of the determinism tests' bfloat16 cases."""
    from promptcache.engine.api import SamplingParams

    sys.path.insert(0, os.path.join(ROOT, "tests", "engine"))
    from test_determinism_smollm2 import CONFIGS, _cases

    _, _, count, seed = CONFIGS["bfloat16"]
    greedy = SamplingParams(max_tokens=8, ignore_eos=True)
    # A multi-turn case's prompt holds the earlier turn's reply: here its earlier turn and suffix.
    prompts = [case.get("prompt") or case["earlier"] + case["suffix"] for case in _cases(seed, count)]
    return [c.token_ids for c in engine.generate(prompts, greedy)]


def paris(engine) -> bool:
    from promptcache.engine.api import SamplingParams

    tokenizer = engine.tokenizer
    question = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]),
                                add_special_tokens=False)
    return "Paris" in engine.generate([question], SamplingParams(max_tokens=12))[0].text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quantize", default="int8", help="comma-separated, each 'none' or one of " + ", ".join(QUANTIZATIONS))
    p.add_argument("--head", choices=HEADS, help="the candidates' output head (default: the model's)")
    p.add_argument("--reference-head", choices=HEADS, help="the reference's output head (default: the model's)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256 + PREFILL, help="tokens per segment")
    p.add_argument("--skip-greedy", action="store_true")
    p.add_argument("--threads", type=int, help="torch threads (one is fastest on a crowded machine, where a team of two stalls)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quantizations = args.quantize.split(",")
    for q in quantizations:
        try:
            if q != "none":
                parse(q)  # a clear error before minutes of work
        except ValueError as e:
            raise SystemExit(f"error: {e}")
    from promptcache.engine.engine import Engine
    from promptcache.model.llama import LlamaModel
    from promptcache.model.source import open_model

    source = open_model(None)

    def engine(q, head):
        model = LlamaModel(source.config, source.load_state_dict(), dtype=torch.bfloat16,
                           quantize=None if q == "none" else q, head=head)
        return Engine(model, source.tokenizer, model_name=source.name, fingerprint=source.fingerprint,
                      cache_config=None, max_batch_size=args.rows, max_seq_len=4096)

    reference = engine("none", args.reference_head)
    ids = reference.tokenizer.encode(fixed_text(), add_special_tokens=False)
    need = args.rows * args.tokens
    if len(ids) < need:
        raise SystemExit(f"error: the text has {len(ids)} tokens, {need} are needed")
    segments = [ids[i * args.tokens:(i + 1) * args.tokens] for i in range(args.rows)]
    ref = decode_log_probs(reference.model, segments)
    base = {"paris_bfloat16": paris(reference)}
    ref_greedy = None if args.skip_greedy else greedy_replies(reference)
    reports = []
    for q in quantizations:
        quantized = engine(q, args.head)
        quant = decode_log_probs(quantized.model, segments)
        kl = (ref.exp() * (ref - quant)).sum(-1)  # (rows, positions)
        report = {"quantize": q, "head": type(quantized.model.head).__name__,
                  "reference_head": type(reference.model.head).__name__, "positions": kl.numel(),
                  "mean_kl": kl.mean().item(), "max_kl": kl.max().item(),
                  "top1_agreement": (ref.argmax(-1) == quant.argmax(-1)).float().mean().item(),
                  **base, f"paris_{q}": paris(quantized)}
        if ref_greedy is not None:
            got = greedy_replies(quantized)
            report.update(greedy_cases=len(got), greedy_identical=sum(a == b for a, b in zip(ref_greedy, got)))
        del quantized
        reports.append(report)
        print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()) + "\n", flush=True)

if __name__ == "__main__":
    main()
