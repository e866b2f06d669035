"""`serve --replicas/--router/--ray-address`: a mistake is one line and exit status 1, before
any model or Ray is started."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from promptcache.cli.main import app


@pytest.fixture(autouse=True)
def root_logging():
    """`serve` configures root logging onto the runner's stderr, which closes after the call:
    put the test process's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("args, message", [
    (["--router", "prefix"], "--router and --ray-address need --replicas"),
    (["--ray-address", "auto"], "--router and --ray-address need --replicas"),
    (["--replicas", "2", "--router", "random"], "--router must be one of prefix, round-robin, least-loaded"),
])
def test_scale_out_option_mistakes_are_one_line(args, message):
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"error: {message}"


def test_replicas_must_be_positive():
    assert CliRunner().invoke(app, ["serve", "--replicas", "0"]).exit_code == 2
