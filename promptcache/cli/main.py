"""The `promptcache` command: one typer app; each subcommand lives in its own module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="promptcache: an LLM inference server built around prompt caching.",
)

# Each module adds its command(s) to `app` when imported; listed here so the commands read
# top-down in one place.
COMMAND_MODULES = ("serve", "generate", "info", "bench", "analyze")


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"promptcache.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"promptcache.cli.{name}":
                raise


_register()
