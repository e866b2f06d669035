"""How the CLI reports a user's mistake: one line on stderr and exit status 1, no traceback."""

from __future__ import annotations

import contextlib
import sys

import typer

from promptcache.engine.api import EngineInputError
from promptcache.model.errors import ModelError


@contextlib.contextmanager
def user_errors():
    try:
        yield
    except (ModelError, EngineInputError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
