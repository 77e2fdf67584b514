"""buf STANDARD lint, formatting, and the breaking-change check against main."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"

pytestmark = pytest.mark.needs_buf


@pytest.fixture(scope="module")
def buf() -> Path:
    if not BUF.exists():
        pytest.skip("buf is installed by `make test` through npm (@bufbuild/buf)")
    return BUF


def _run(buf: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(buf), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_passes(buf: Path) -> None:
    result = _run(buf, "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_are_buf_formatted(buf: Path) -> None:
    result = _run(buf, "format", "--diff", "--exit-code")
    assert result.returncode == 0, result.stdout


def test_no_breaking_change_against_main(buf: Path) -> None:
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "main"], cwd=ROOT, capture_output=True
    )
    if has_main.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI checks out main; the breaking check needs it")
        pytest.skip("no local main branch to compare with")
    result = _run(buf, "breaking", "--against", ".git#branch=main")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_breaking_check_catches_a_removed_field(buf: Path, tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    for copy in (before, after):
        shutil.copytree(ROOT / "protos", copy / "protos")
        shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    target = after / "protos/metaagent/orchestrator/v1/orchestrator_service.proto"
    text = target.read_text()
    assert "int32 tokens_consumed = 4;" in text
    target.write_text(text.replace("int32 tokens_consumed = 4;", ""))
    result = _run(buf, "breaking", "--against", str(before), cwd=after)
    assert result.returncode != 0
    assert "tokens_consumed" in result.stdout + result.stderr
