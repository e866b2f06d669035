"""PROMPTCACHE_REQUIRE_REAL_PARTS=1 turns a skip for a missing real part into a failure (tests/
real_parts.py), run on a small suite in a pytest of its own: with the flag, the skips in a test,
in a fixture and at a module's import fail; a CUDA test still skips; an xfail stays an xfail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = {
    "test_parts.py": """
import pytest

@pytest.fixture
def ray():
    pytest.skip("Ray is not installed")

def test_redis():
    pytest.skip("redis-server is not installed")

def test_cluster(ray):
    pass

@pytest.mark.cuda
def test_gpu():
    pytest.skip("no CUDA GPU on this machine")

@pytest.mark.xfail(strict=True)
def test_known_difference():
    assert False

def test_runs():
    pass
""",
    "test_module_skip.py": """
import pytest

pytest.importorskip("a_module_that_is_not_installed")

def test_never_collected():
    pass
""",
}


def run_suite(tmp_path: Path, flag: str, *files: str) -> str:
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "PROMPTCACHE_REQUIRE_REAL_PARTS": flag,
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the installed plugins only slow its start
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "real_parts",
                             "-W", "ignore::pytest.PytestUnknownMarkWarning", *files],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return result.stdout.splitlines()[-1]


@pytest.mark.parametrize("flag", ["", "0"])
def test_without_the_flag_a_missing_part_skips(tmp_path, flag):
    assert run_suite(tmp_path, flag).startswith("1 passed, 4 skipped, 1 xfailed")


def test_with_the_flag_a_missing_part_fails(tmp_path):
    assert run_suite(tmp_path, "1", "test_parts.py").startswith("1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error")
    assert "1 error" in run_suite(tmp_path, "1", "test_module_skip.py")
