"""The settings `promptcache serve` builds from its flags and environment, without loading a
model: `serve` is stopped where it would load one, with the settings it built."""

from __future__ import annotations

import logging


class Loaded(Exception):
    """Raised in place of loading the model; carries the settings."""


def settings_from_serve(monkeypatch, args: list[str], env: dict[str, str]):
    from typer.testing import CliRunner

    from promptcache.cli.main import app as cli

    def load(settings):
        raise Loaded(settings)

    root = logging.getLogger()  # `serve` configures root logging onto the runner's stream
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr("promptcache.server.app.engine_from_settings", load)
    result = CliRunner().invoke(cli, ["serve", *args], env=env)
    assert isinstance(result.exception, Loaded), result.output
    return result.exception.args[0]
