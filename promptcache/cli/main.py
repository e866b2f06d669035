"""The `promptcache` command: one typer app; each subcommand lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="promptcache: an LLM inference server built around prompt caching.",
)


def _register() -> None:
    # Each module adds its command(s) to `app`; kept in one place so the command list reads
    # top-down. Imports are deferred so `promptcache --help` stays fast.
    from promptcache.cli import generate, info, serve  # noqa: F401


_register()
