"""The CI guard: skipping a test that needs a real server fails the run under CI=true."""

import pytest

SKIPPING_TESTS = """
import pytest

@pytest.mark.needs_redis
def test_needs_redis():
    pytest.skip("no redis here")

def test_optional():
    pytest.skip("nice to have")
"""


def test_a_skipped_server_test_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.support.ci_guard"]')
    pytester.makepyfile(SKIPPING_TESTS)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "-W",
        "ignore::pytest.PytestUnknownMarkWarning",
    )
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*CI requires what this test needs*"])


def test_outside_ci_the_same_test_is_only_skipped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.support.ci_guard"]')
    pytester.makepyfile(SKIPPING_TESTS)
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "-W",
        "ignore::pytest.PytestUnknownMarkWarning",
    )
    result.assert_outcomes(skipped=2)
