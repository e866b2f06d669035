"""`promptcache bench`: a seeded workload against any OpenAI-compatible server, timed per request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from promptcache.cli.errors import user_errors
from promptcache.cli.main import app


@app.command()
def bench(
    base_url: Annotated[str, typer.Option("--base-url", help="The server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name to send.")],
    workload: Annotated[str, typer.Option(help="chat, rag, agent or shared-system.")] = "chat",
    conversations: Annotated[int, typer.Option(help="Conversations (chat), questions (rag), sessions (agent) or users (shared-system).")] = 8,
    turns: Annotated[int, typer.Option(help="User turns per conversation (agent: steps).")] = 3,
    shared_tokens: Annotated[int, typer.Option(help="Tokens of the shared part: system prompt, document or tool list.")] = 512,
    turn_tokens: Annotated[int, typer.Option(help="Tokens of each user message.")] = 24,
    documents: Annotated[int, typer.Option(help="rag: distinct documents.")] = 2,
    max_tokens: Annotated[int, typer.Option(help="Reply length limit per request.", min=1)] = 32,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.", min=1)] = 1,
    seed: Annotated[int, typer.Option(help="Workload seed: the same seed sends the same text.")] = 0,
    api_key: Annotated[str, typer.Option(envvar="OPENAI_API_KEY", help="API key (or OPENAI_API_KEY).")] = "unused",
    compare: Annotated[Optional[str], typer.Option(help="A second base URL: every turn goes to both, alternating, and ratios are reported.")] = None,
    compare_model: Annotated[Optional[str], typer.Option(help="Model name for --compare (default: --model).")] = None,
    timeout_s: Annotated[float, typer.Option(help="Per-request timeout in seconds.", min=0.1)] = 600.0,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSON report (summary and per-request rows) here.", dir_okay=False)] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of time-to-first-token per request, coloured by cached share.", dir_okay=False)] = None,
) -> None:
    """Send a seeded workload with streaming and report TTFT, inter-token and total latency."""
    import openai
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from promptcache.bench import report
    from promptcache.bench.runner import Endpoint, Runner
    from promptcache.bench.workloads import Sizes, build

    with user_errors():
        sizes = Sizes(conversations=conversations, turns=turns, shared_tokens=shared_tokens,
                      turn_tokens=turn_tokens, documents=documents)
        convs = build(workload, sizes, seed)
        urls = [base_url] + ([compare] if compare else [])
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base URL {url!r} must start with http:// or https://")
        labels = [url if len(set(urls)) == len(urls) else f"{i + 1}: {url}" for i, url in enumerate(urls)]
        models = [model, compare_model or model]
        endpoints = [Endpoint(label, openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=timeout_s), m)
                     for label, url, m in zip(labels, urls, models)]
    total = sum(len(c.turns) for c in convs) * len(endpoints)
    console = Console(stderr=True)
    with Progress(TextColumn(f"{workload}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("requests", total=total)
        runner = Runner(endpoints, concurrency, max_tokens, on_request=lambda row: progress.advance(task))
        rows = asyncio.run(runner.run(convs))
    summaries = {e.label: report.summarize([r for r in rows if r.endpoint == e.label]) for e in endpoints}
    ratio = report.ratios(*summaries.values()) if compare else None
    Console().print(report.table(summaries, ratio))
    errors = [r.error for r in rows if r.error]
    if errors:
        console.print(f"{len(errors)} requests failed; the first: {errors[0]}", markup=False, highlight=False)
    meta = {"workload": workload, "seed": seed, "sizes": vars(sizes), "concurrency": concurrency, "max_tokens": max_tokens,
            "endpoints": [{"label": e.label, "base_url": u, "model": e.model} for e, u in zip(endpoints, urls)]}
    with user_errors():
        try:
            if out is not None:
                out.write_text(json.dumps(report.document(meta, summaries, rows, ratio), indent=1) + "\n")
            if plot is not None:
                from promptcache.bench.plot import plot_ttft

                plot_ttft(rows, plot, f"{workload}: time to first token per request")
        except OSError as exc:
            raise ValueError(f"cannot write {exc.filename or 'the report'}: {exc.strerror}") from None
    if len(errors) == len(rows):
        raise typer.Exit(1)
