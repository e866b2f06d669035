"""Under PROMPTCACHE_REQUIRE_REAL_PARTS=1 (CI sets it in .ci/run) a skipped test is a failure.

Tests skip where a real part is missing (redis-server, chromium, Ray, MLflow, an FBGEMM kernel),
so that a developer machine without one still runs the rest; in CI such a skip would turn a
missing part into a green run that tested less. Only a test marked `cuda` may skip there, on a
machine without a GPU. Hooks imported by tests/conftest.py.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_REAL_PARTS = "PROMPTCACHE_REQUIRE_REAL_PARTS"


def requires_real_parts() -> bool:
    return os.environ.get(REQUIRE_REAL_PARTS, "") not in ("", "0")


def _fail(report, what: str) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{what} skipped, but {REQUIRE_REAL_PARTS}=1 requires every real part: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if requires_real_parts() and report.skipped and not hasattr(report, "wasxfail") and "cuda" not in item.keywords:
        _fail(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()
    if requires_real_parts() and report.skipped:  # a module-level importorskip or skip
        _fail(report, collector.nodeid)
