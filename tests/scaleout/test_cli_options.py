"""`serve --replicas/--router/--ray-address`: a mistake is one line and exit status 1, before
any model or Ray is started."""

from __future__ import annotations

import logging
import os

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


NEED = "--router, --ray-address and --replica-cpus need --replicas"


@pytest.mark.parametrize("args, message", [
    (["--router", "prefix"], NEED),
    (["--ray-address", "auto"], NEED),
    (["--replica-cpus", "1"], NEED),
    (["--replicas", "2", "--router", "random"], "--router must be one of prefix, round-robin, least-loaded"),
    (["--replicas", "2", "--replica-cpus", "0"], "--replica-cpus must be a positive number of CPUs"),
    (["--replicas", "2", "--replica-cpus", "-1"], "--replica-cpus must be a positive number of CPUs"),
    (["--replicas", "2", "--replica-cpus", "nan"], "--replica-cpus must be a positive number of CPUs"),
    (["--replicas", "3", "--replica-cpus", "100000"],
     f"--replica-cpus 100000 for 3 replicas needs 300000 CPUs; this machine's Ray has {os.cpu_count()}"),
])
def test_scale_out_option_mistakes_are_one_line(args, message):
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"error: {message}"


def test_replicas_must_be_positive():
    assert CliRunner().invoke(app, ["serve", "--replicas", "0"]).exit_code == 2


@pytest.mark.parametrize("cfg, cluster_cpus, want", [
    (dict(replicas=2), 8.0, (4.0, 4)),  # a local Ray: the machine split evenly
    (dict(replicas=3), 2.0, (2 / 3, 1)),  # at least one thread
    (dict(replicas=4, ray_address="auto"), 64.0, (1.0, 1)),  # a cluster: one CPU each by default
    (dict(replicas=4, ray_address="auto", replica_cpus=6), 64.0, (6, 6)),  # asked for
    (dict(replicas=2, replica_cpus=1.5, num_cpus=8), 8.0, (1.5, 1)),  # whole threads
])
def test_cpus_and_threads_per_replica(cfg, cluster_cpus, want):
    from promptcache.scaleout.launch import ScaleOut

    assert ScaleOut(**cfg).per_replica(cluster_cpus) == want
