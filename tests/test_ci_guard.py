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


@pytest.mark.parametrize(
    ("ci", "outcomes"),
    [("true", {"failed": 1, "skipped": 1}), (None, {"skipped": 2})],
    ids=["under-ci", "on-a-developer-machine"],
)
def test_a_skipped_server_test_fails_only_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, outcomes: dict
) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.support.ci_guard"]')
    pytester.makepyfile(SKIPPING_TESTS)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "-W",
        "ignore::pytest.PytestUnknownMarkWarning",
    )
    result.assert_outcomes(**outcomes)
    if ci:
        result.stdout.fnmatch_lines(["*CI requires what this test needs*"])
