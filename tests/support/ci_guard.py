"""Under CI (`CI=true`) a skipped test that needs a server or tool fails instead of passing."""

import os
from collections.abc import Iterator

import pytest

REQUIRED_IN_CI = ("needs_redis", "needs_postgres", "needs_buf")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    required = any(item.get_closest_marker(marker) for marker in REQUIRED_IN_CI)
    if report.skipped and required and os.environ.get("CI") == "true":
        report.outcome = "failed"
        report.longrepr = f"CI requires what this test needs, but it was skipped: {report.longrepr}"
