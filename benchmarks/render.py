"""Chat rendering cost against the number of messages: render + tokenize + per-token roles.

    .venv/bin/python benchmarks/render.py            # 250 .. 2,000 one-character messages
    .venv/bin/python benchmarks/render.py --json

Uses the embedded SmolLM2's tokenizer and chat template (no model weights are loaded). Before
rendering was made linear (one render per request), 250, 500, 1,000 and 2,000 messages took
0.55, 2.1, 7.5 and 26.6 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptcache.model.gguf_loader import read_gguf  # noqa: E402
from promptcache.model.source import embedded_model_path  # noqa: E402
from promptcache.model.tokenizer import Tokenizer  # noqa: E402
from promptcache.server.chat import ChatRenderer  # noqa: E402
from promptcache.server.openai_schema import ChatMessage  # noqa: E402

SIZES = (250, 500, 1000, 2000)


def conversation(n: int) -> list[ChatMessage]:
    return [ChatMessage(role="user" if i % 2 == 0 else "assistant", content="x") for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many renders")
    args = parser.parse_args()
    renderer = ChatRenderer(Tokenizer.from_gguf(read_gguf(embedded_model_path()).metadata))
    rows = []
    for n in SIZES:
        messages = conversation(n)
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            prompt = renderer.render(messages)
            best = min(best, time.perf_counter() - start)
        rows.append({"messages": n, "prompt_tokens": len(prompt.tokens), "seconds": round(best, 4)})
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'messages':>8} {'tokens':>8} {'seconds':>8}")
    for row in rows:
        print(f"{row['messages']:>8} {row['prompt_tokens']:>8} {row['seconds']:>8.4f}")


if __name__ == "__main__":
    main()
