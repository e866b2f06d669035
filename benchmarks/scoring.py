"""Scoring served from the cache: a multiple-choice evaluation and prompt-logprob requests, sent
to a live `promptcache serve` (SmolLM2, bfloat16) through the official openai client.

    .venv/bin/python benchmarks/scoring.py                # both parts, a table
    .venv/bin/python benchmarks/scoring.py --json --questions 20 --repeat 3

(a) Multiple choice as lm-eval sends it: one loglikelihood request per choice, `echo: true,
    logprobs: 1, max_tokens: 1`, the score of a choice being the sum of its tokens' logprobs.
    A ~300-token passage is shared by every question; `--questions` questions (drawn from
    `--seed`) have 4 choices each. Run once with the cache on and once with it off (the
    `caching` extension), in one server. Reported: prefill tokens computed over prompt tokens
    sent (goal <= 0.3; a request over cached blocks also recomputes the last cached row, whose
    logits give the next token's logprob: counted), and whether every argmax choice, and every
    returned logprob, is the same on and off.
(b) Prompt-logprob requests (`echo`, `logprobs: 5`, `max_tokens: 0`) over a cached ~1,000-token
    prefix with distinct ~20-token suffixes, against the same requests with the cache off:
    the time ratio (goal <= 0.2x), best of --repeat.
(c) With lm-eval installed (`pip install lm_eval` into the venv; it is not a test dependency),
    lm-eval itself, its `local-completions` model and the server's own tokenizer (`/tokenize`,
    `/tokenizer_info`), on two tasks written here as local files (no download): the questions of
    (a) as a `multiple_choice` task and their right answers as a `loglikelihood` task; against a
    server with the cache and one started with `--no-cache`. Reported: each task's metrics, whether
    every per-request result is the same on and off, and prompt tokens computed / sent from the
    server's metrics (plus one recomputed row per request, an upper bound). `--no-lm-eval` skips it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai  # noqa: E402

from benchmarks.live_server import serve  # noqa: E402

OFF = {"caching": {"enabled": False}}
WORDS = ("river stone valley merchant harbor lantern orchard copper tower winter signal garden bridge meadow "
         "engine compass thunder library forest candle market ribbon island castle").split()
COLORS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange"]


def passage(rng: random.Random, words: int) -> tuple[str, dict[str, str]]:
    """A story of about `words` words naming each of eight things' colors (the facts asked)."""
    facts = {thing: rng.choice(COLORS) for thing in rng.sample(WORDS, 8)}
    sentences = [f"The {thing} in the story was {color}." for thing, color in facts.items()]
    while sum(len(s.split()) for s in sentences) < words:
        a, b, c = rng.sample(WORDS, 3)
        sentences.insert(rng.randrange(len(sentences) + 1), f"Near the {a}, a {b} stood by the old {c}.")
    return " ".join(sentences), facts


def questions(seed: int, count: int) -> tuple[str, list[tuple[str, list[str], int]]]:
    rng = random.Random(seed)
    text, facts = passage(rng, 230)
    out = []
    for _ in range(count):
        thing = rng.choice(sorted(facts))
        wrong = rng.sample([c for c in COLORS if c != facts[thing]], 3)
        choices = wrong + [facts[thing]]
        rng.shuffle(choices)
        out.append((f"Question: what color was the {thing}?\nAnswer:", [" " + c for c in choices],
                    choices.index(facts[thing])))
    return "Read the story, then answer.\n\n" + text + "\n\n", out


def loglikelihood(client, model: str, context: str, continuation: str, extra: dict | None):
    reply = client.completions.create(model=model, prompt=context + continuation, echo=True, logprobs=1,
                                      max_tokens=1, temperature=0, extra_body=extra)
    return reply


def multiple_choice(client, model: str, seed: int, count: int, extra: dict | None) -> dict:
    shared, items = questions(seed, count)
    sent = computed = 0
    picks, logprobs = [], []
    for question, choices, _ in items:
        context = shared + question
        scores = []
        for choice in choices:
            reply = loglikelihood(client, model, context, choice, extra)
            lp = reply.choices[0].logprobs
            # the continuation's tokens: those whose text starts at or past the context's end
            scores.append(sum(v for v, off in zip(lp.token_logprobs[:-1], lp.text_offset[:-1])
                              if off >= len(context)))
            logprobs.append(lp.token_logprobs[:-1])
            cached = reply.usage.prompt_tokens_details.cached_tokens
            sent += reply.usage.prompt_tokens
            computed += reply.usage.prompt_tokens - cached + (1 if cached else 0)
        picks.append(scores.index(max(scores)))
    accuracy = sum(p == answer for p, (_, _, answer) in zip(picks, items)) / len(items)
    return {"prompt_tokens": sent, "computed": computed, "ratio": computed / sent, "picks": picks,
            "accuracy": accuracy, "logprobs": logprobs}


def prompt_scoring(client, model: str, requests: int, repeat: int) -> dict:
    prefix = "The archive holds letters from merchants, sailors and scholars across three centuries. " * 70
    suffixes = [f" Letter {i}: the {WORDS[i % len(WORDS)]} and the {WORDS[(3 * i) % len(WORDS)]} are noted here."
                for i in range(requests)]

    def run(extra):
        start = time.perf_counter()
        for s in suffixes:
            client.completions.create(model=model, prompt=prefix + s, echo=True, logprobs=5, max_tokens=0,
                                      temperature=0, extra_body=extra)
        return time.perf_counter() - start

    client.completions.create(model=model, prompt=prefix + " warm", echo=True, logprobs=5, max_tokens=0)
    on = min(run(None) for _ in range(repeat))
    off = min(run(OFF) for _ in range(repeat))
    return {"requests": requests, "on_s": on, "off_s": off, "ratio": on / off}


def lm_eval_tasks(directory: Path, seed: int, count: int) -> list[str]:
    """The questions of (a) as two lm-eval tasks in local files."""
    shared, items = questions(seed, count)
    rows = [{"context": shared + q, "choices": choices, "answer": answer} for q, choices, answer in items]
    (directory / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {directory / 'mc.jsonl'}\n"
              "test_split: test\ndoc_to_text: \"{{context}}\"\ntarget_delimiter: \"\"\n")
    (directory / "mc.yaml").write_text("task: promptcache_mc\noutput_type: multiple_choice\n" + common +
                                       "doc_to_choice: choices\ndoc_to_target: answer\n"
                                       "metric_list:\n  - metric: acc\n")
    (directory / "ll.yaml").write_text("task: promptcache_ll\noutput_type: loglikelihood\n" + common +
                                       "doc_to_target: \"{{choices[answer]}}\"\n"
                                       "metric_list:\n  - metric: perplexity\n  - metric: acc\n")
    return ["promptcache_mc", "promptcache_ll"]


def counter(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_lm_eval(seed: int, count: int) -> dict:
    """(c): lm-eval against a server with the cache, then one with --no-cache."""
    import os
    import tempfile

    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OPENAI_API_KEY="unused")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = {}
    with tempfile.TemporaryDirectory() as directory:
        tasks = lm_eval_tasks(Path(directory), seed, count)
        for mode, options in (("on", []), ("off", ["--no-cache"])):
            proc, url = serve(["--dtype", "bfloat16", *options])
            try:
                model = openai.OpenAI(base_url=url + "/v1", api_key="unused").models.list().data[0].id
                before = {n: counter(url, n) for n in ("promptcache_prompt_tokens_total", "promptcache_cached_tokens_total")}
                requests_before = counter(url, "promptcache_requests_total")
                result = simple_evaluate(
                    model="local-completions",
                    model_args=f"model={model},base_url={url}/v1/completions,tokenizer_backend=remote,"
                               "tokenized_requests=True,num_concurrent=1,max_retries=1",
                    tasks=tasks, task_manager=TaskManager(include_path=directory), log_samples=True,
                    bootstrap_iters=0)
                sent = counter(url, "promptcache_prompt_tokens_total") - before["promptcache_prompt_tokens_total"]
                cached = counter(url, "promptcache_cached_tokens_total") - before["promptcache_cached_tokens_total"]
                requests = counter(url, "promptcache_requests_total") - requests_before
            finally:
                proc.terminate()
                proc.wait(30)
            out[mode] = {
                "metrics": {t: {k: v for k, v in result["results"][t].items() if isinstance(v, float)} for t in tasks},
                "responses": {t: [s["resps"] for s in result["samples"][t]] for t in tasks},
                "ratio": (sent - cached + (requests if cached else 0)) / sent if sent else None,
            }
    return {"metrics_on": out["on"]["metrics"], "metrics_off": out["off"]["metrics"],
            "same_results": out["on"]["responses"] == out["off"]["responses"],
            "ratio_on": out["on"]["ratio"], "ratio_off": out["off"]["ratio"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=8, help="prompt-logprob requests per run in (b)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-lm-eval", action="store_true", help="skip (c) even with lm-eval installed")
    args = parser.parse_args()
    proc, url = serve(["--dtype", "bfloat16"])
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        on = multiple_choice(client, model, args.seed, args.questions, None)
        off = multiple_choice(client, model, args.seed, args.questions, OFF)
        scoring = prompt_scoring(client, model, args.requests, args.repeat)
    finally:
        proc.terminate()
        proc.wait(30)
    result = {
        "multiple_choice": {"questions": args.questions, "choices": 4, "prompt_tokens": on["prompt_tokens"],
                            "computed_on": on["computed"], "ratio_on": round(on["ratio"], 3),
                            "ratio_off": round(off["ratio"], 3), "same_picks": on["picks"] == off["picks"],
                            "same_logprobs": on["logprobs"] == off["logprobs"], "accuracy": on["accuracy"]},
        "prompt_logprobs": {k: round(v, 3) if isinstance(v, float) else v for k, v in scoring.items()},
    }
    if not args.no_lm_eval:
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            result["lm_eval"] = "not installed (pip install lm_eval into the venv)"
        else:
            result["lm_eval"] = run_lm_eval(args.seed, args.questions)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    mc, pl = result["multiple_choice"], result["prompt_logprobs"]
    print(f"(a) {mc['questions']} questions x 4 choices: prefill computed / prompt tokens sent = "
          f"{mc['ratio_on']} with the cache (goal <= 0.3), {mc['ratio_off']} without; same picks on and off: "
          f"{mc['same_picks']}; same logprobs: {mc['same_logprobs']}; accuracy {mc['accuracy']:.2f}")
    print(f"(b) {pl['requests']} prompt-logprob requests over a cached prefix: {pl['on_s']} s against "
          f"{pl['off_s']} s with the cache off: {pl['ratio']}x (goal <= 0.2x)")
    if "lm_eval" in result:
        print(f"(c) lm-eval: {json.dumps(result['lm_eval'])}")


if __name__ == "__main__":
    main()
