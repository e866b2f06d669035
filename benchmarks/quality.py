"""Agreement with the float32 reference, per CPU serving configuration and kernel family.

    python benchmarks/quality.py [--prompts 40] [--tokens 32] [--json]
    python benchmarks/quality.py --margins "What is the capital of France?" [--tokens 12]

A fixed prompt set ("Explain X in two sentences." for 40 fixed X), rendered with the model's chat
template as the server and the CLI render it, gets `--tokens` greedy tokens from promptcache's
Engine (prefix cache off, EOS ignored, so every reply has the same length) in each CPU serving
configuration: bfloat16, bfloat16 with int8 decode, and float32. Each configuration runs in its
own subprocess twice: with the machine's default oneDNN kernels and with ONEDNN_MAX_CPU_ISA=AVX2,
which makes oneDNN (every bfloat16 product, and the float32 head) use its AVX2 kernels, as on an
older CPU. The reference is float32 with the default kernels.

For each configuration it reports:
- identical: replies equal to the reference's, token for token;
- mean prefix: the mean number of leading tokens that agree with the reference;
- first-token error: max |logit - reference logit| over the whole vocabulary, on the first
  generated token of every prompt (computed by prefill);
- reply error: the same over every position of the reference's reply, fed to the configuration
  token by token (decode, where int8 applies), over the reference's top REPLY_TOP_K tokens at each
  position (the ones a greedy choice could move to);
- gap error: max over positions and those tokens j of |change of (logit[top] - logit[j])|, where
  top is the reference's greedy token. A greedy choice can only flip where the reference's margin
  (top minus runner-up) is below this, which is what tests/engine/margins.py checks against.

`--margins PROMPT` prints the float32 reference's greedy reply to one chat prompt with the margin
(top logit minus runner-up) at each token: what an answer test can rely on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOPICS = [
    "gravity", "photosynthesis", "inflation", "democracy", "a black hole", "the water cycle", "evolution",
    "electricity", "the immune system", "climate change", "a computer virus", "the internet", "vaccines",
    "plate tectonics", "supply and demand", "the French Revolution", "DNA", "a volcano", "the stock market",
    "machine learning", "the moon's phases", "a rainbow", "compound interest", "the printing press",
    "nuclear fission", "a recession", "the Renaissance", "an earthquake", "antibiotics", "a hurricane",
    "the speed of light", "recycling", "the Roman Empire", "a battery", "friction", "the human heart",
    "a solar eclipse", "blockchain", "the Great Wall of China", "sound waves",
]
REPLY_TOP_K = 32
CONFIGS = [("float32", None), ("bfloat16", None), ("bfloat16", "int8")]
KERNELS = {"default": None, "AVX2": "AVX2"}  # value of ONEDNN_MAX_CPU_ISA


def prompts(tokenizer, n: int) -> list[list[int]]:
    """The chat-rendered prompt set, as `promptcache generate` renders a prompt."""
    out = []
    for topic in TOPICS[:n]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"Explain {topic} in two sentences."}])
        out.append(tokenizer.encode(text, add_special_tokens=False))
    return out


@torch.inference_mode()
def forced_logits(model, prompt_ids: list[list[int]], replies: list[list[int]]) -> torch.Tensor:
    """float32 logits (B, T, V): position t predicts replies[b][t], with replies[b][:t] fed in
    (prefill for t = 0, then one batched decode step per token, as the engine computes them)."""
    B, T = len(prompt_ids), len(replies[0])
    kv = model.new_kv(B, max(map(len, prompt_ids)) + T + 1)
    first = [model.prefill(torch.tensor(p), 0, b, kv) for b, p in enumerate(prompt_ids)]
    logits = [torch.stack(first)]
    positions = [len(p) for p in prompt_ids]
    for t in range(T - 1):
        tokens = torch.tensor([r[t] for r in replies])
        logits.append(model.decode(tokens, positions, list(range(B)), kv))
        positions = [p + 1 for p in positions]
    return torch.stack(logits, dim=1)


def run_configuration(dtype: str, quantize: str | None, n: int, tokens: int, reference_path: str | None) -> dict:
    """One configuration in this process: greedy replies through the Engine, then its logits
    along the reference's replies (when a reference file is given)."""
    from promptcache.engine.api import SamplingParams
    from promptcache.engine.engine import Engine

    engine = Engine.from_model(None, device="cpu", dtype=dtype, quantize=quantize, cache_config=None,
                               max_batch_size=n, max_seq_len=256)
    ids = prompts(engine.tokenizer, n)
    start = time.perf_counter()
    completions = engine.generate(ids, SamplingParams(max_tokens=tokens, ignore_eos=True))
    result = {"replies": [c.token_ids for c in completions], "generate_s": time.perf_counter() - start}
    if reference_path is None:  # this is the reference: keep its logits for the others
        logits = forced_logits(engine.model, ids, result["replies"])
        top = logits.topk(REPLY_TOP_K, dim=-1)
        result["reference"] = {"first": logits[:, 0].clone(), "top_ids": top.indices, "top_values": top.values}
        return result
    reference = torch.load(reference_path)
    logits = forced_logits(engine.model, ids, reference["replies"])
    result["first_error"] = (logits[:, 0] - reference["first"]).abs().max().item()
    mine = logits.gather(-1, reference["top_ids"])  # (B, T, K): the reference's top tokens
    diff = mine - reference["top_values"]
    result["reply_error"] = diff.abs().max().item()
    result["gap_error"] = (diff - diff[..., :1]).abs().max().item()
    return result


def worker(args) -> None:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result = run_configuration(args.dtype, args.quantize, args.prompts, args.tokens, args.reference)
    torch.save(result, args.out)


def spawn(dtype: str, quantize: str | None, isa: str | None, args, out: str, reference: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa is not None:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--dtype", dtype, "--prompts", str(args.prompts),
           "--tokens", str(args.tokens), "--out", out]
    if quantize:
        cmd += ["--quantize", quantize]
    if reference:
        cmd += ["--reference", reference]
    subprocess.run(cmd, env=env, check=True)
    return torch.load(out)


def agreement(replies: list[list[int]], reference: list[list[int]]) -> tuple[int, float]:
    """(replies identical to the reference's, mean length of the agreeing prefix)."""
    prefixes = []
    for mine, ref in zip(replies, reference):
        n = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
        prefixes.append(n)
    identical = sum(a == b for a, b in zip(replies, reference))
    return identical, sum(prefixes) / len(prefixes)


def measure(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = spawn("float32", None, None, args, os.path.join(tmp, "ref.pt"), None)
        ref_path = os.path.join(tmp, "reference.pt")
        torch.save({"replies": ref["replies"], **ref["reference"]}, ref_path)
        for dtype, quantize in CONFIGS:
            for kernels, isa in KERNELS.items():
                if (dtype, quantize, isa) == ("float32", None, None):
                    result = {**ref, "first_error": 0.0, "reply_error": 0.0, "gap_error": 0.0}
                else:
                    result = spawn(dtype, quantize, isa, args, os.path.join(tmp, "out.pt"), ref_path)
                identical, prefix = agreement(result["replies"], ref["replies"])
                rows.append({"dtype": dtype, "quantize": quantize or "none", "kernels": kernels,
                             "identical": identical, "prompts": len(ref["replies"]), "mean_prefix": prefix,
                             "first_error": result["first_error"], "reply_error": result["reply_error"],
                             "gap_error": result["gap_error"], "generate_s": result["generate_s"]})
    return rows


def print_margins(args) -> None:
    """The float32 reference's greedy reply to one chat prompt, with the margin at each token."""
    from promptcache.engine.engine import Engine

    engine = Engine.from_model(None, device="cpu", dtype="float32", cache_config=None, max_batch_size=1,
                               max_seq_len=256)
    tok = engine.tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": args.margins}]), add_special_tokens=False)
    reply = []
    for _ in range(args.tokens):  # greedy, one token at a time: forced_logits along its own reply
        logits = forced_logits(engine.model, [ids], [reply + [0]])[0, -1]
        reply.append(int(logits.argmax()))
        top = logits.topk(2)
        margin = (top.values[0] - top.values[1]).item()
        print(f"{len(reply):3d} {tok.decode([reply[-1]])!r:>14} {margin:7.3f}   runner-up {tok.decode([int(top.indices[1])])!r}")
        if reply[-1] in tok.eos_token_ids:
            break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=len(TOPICS))
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--margins", metavar="PROMPT")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--quantize", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.margins:
        return print_margins(args)
    from benchmarks import machine

    rows = measure(args)
    if args.json:
        print(json.dumps({"machine": machine.describe(torch.device("cpu")), "results": rows}, indent=2))
        return
    print(f"# {machine.describe(torch.device('cpu'))}; {args.prompts} prompts x {args.tokens} greedy tokens")
    print("| configuration | kernels | identical | mean prefix | first-token error | reply error | gap error |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        name = r["dtype"] + (" + int8" if r["quantize"] != "none" else "")
        print(f"| {name} | {r['kernels']} | {r['identical']}/{r['prompts']} | {r['mean_prefix']:.1f} "
              f"| {r['first_error']:.3f} | {r['reply_error']:.3f} | {r['gap_error']:.3f} |")


if __name__ == "__main__":
    main()
