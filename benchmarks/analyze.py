"""`promptcache analyze` on a generated log: how long a log of N requests takes, by phase.

    .venv/bin/python benchmarks/analyze.py --requests 100000 [--keep log.jsonl | --log log.jsonl] [--quick]

The log is seeded mixed traffic in the OpenAI chat shape with timestamps: multi-turn chats
behind a shared system prompt (one app puts the time in its system prompt), RAG questions over a
few documents, and agent steps behind a tool list sent in two orders. Prompts average about 400
tokens. Prints the phase times and the headline figures, or --json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptcache.bench.workloads import _WORDS  # noqa: E402


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def generate(path: Path, requests: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    chat_system = "You are the support assistant of Example Corp. " + words(rng, 250)
    clock_system = "You are a scheduling assistant. " + words(rng, 150)
    docs = [f"Document {d}: " + words(rng, 350) for d in range(5)]
    tools = [{"type": "function", "function": {"name": f"tool_{t}", "description": words(rng, 25),
                                                "parameters": {"type": "object", "properties": {}}}} for t in range(8)]
    agent_system = "You are an agent. Call tools to finish the task. " + words(rng, 60)
    chats: list[list[dict]] = []
    t = 1_767_225_600.0
    with open(path, "w") as out:
        for _ in range(requests):
            t += rng.expovariate(20.0)
            kind = rng.random()
            if kind < 0.4:  # multi-turn chat: continue a conversation or start one
                if chats and rng.random() < 0.7:
                    conv = rng.choice(chats)
                    conv += [{"role": "assistant", "content": words(rng, 30)}, {"role": "user", "content": words(rng, 15)}]
                    if len(conv) > 12:
                        chats.remove(conv)
                else:
                    conv = [{"role": "system", "content": chat_system}, {"role": "user", "content": words(rng, 15)}]
                    chats.append(conv)
                    if len(chats) > 200:
                        chats.pop(0)
                body = {"model": "m", "messages": list(conv)}
            elif kind < 0.6:  # the system prompt carries the time
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
                body = {"model": "m", "messages": [
                    {"role": "system", "content": f"Current time: {stamp}. {clock_system}"},
                    {"role": "user", "content": words(rng, 20)}]}
            elif kind < 0.85:  # RAG
                body = {"model": "m", "messages": [
                    {"role": "system", "content": rng.choice(docs)}, {"role": "user", "content": words(rng, 12) + "?"}]}
            else:  # agent step, tools in one of two orders
                order = tools if rng.random() < 0.8 else tools[::-1]
                body = {"model": "m", "tools": order, "messages": [
                    {"role": "system", "content": agent_system}, {"role": "user", "content": words(rng, 10)}]}
            out.write(json.dumps({"ts": round(t, 3), "endpoint": "/v1/chat/completions", "body": body}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="write the log here (default: a temporary file)")
    parser.add_argument("--log", type=Path, help="analyse this log instead of generating one")
    parser.add_argument("--jobs", type=int, help="replay worker processes (default: one per CPU)")
    parser.add_argument("--replicas", default="1,2,4,8", help="replica counts of the grid")
    parser.add_argument("--quick", action="store_true", help="as analyze --quick: the headline and the LRU curve")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from promptcache.analyze.pipeline import analyze
    from promptcache.analyze.whatif import Settings
    from promptcache.model.source import open_model

    with tempfile.TemporaryDirectory() as tmp:
        path = args.log or args.keep or Path(tmp) / "log.jsonl"
        if args.log is None:
            generate(path, args.requests)
        start = time.perf_counter()
        source = open_model(None)
        settings = Settings(kv_bytes_per_token=source.config.kv_bytes_per_token(2), jobs=args.jobs,
                            replicas=() if args.quick else tuple(int(n) for n in args.replicas.split(",")))
        if args.quick:
            settings = replace(settings, policies=("lru",), block_sizes=())
        report = analyze(path, source, settings)
        total = time.perf_counter() - start
    figures = {"requests": report["requests"], "prompt_tokens": report["prompt_tokens"],
               "hit_ratio": report["hit_ratio"], "render_s": report["seconds"]["render"],
               "grid_s": report["seconds"]["grid"],
               "analysis_s": report["seconds"]["total"], "total_s_with_model_open": total,
               "lint": [(f["kind"], f["affected"]) for f in report["lint"]]}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
