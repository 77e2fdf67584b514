"""The `metaagent` command on its own: certs, tokens, and status when nothing runs."""

import json
import subprocess
import sys
from pathlib import Path

import jwt

from tests.support.mesh_process import ROOT, mesh_environment


def _metaagent(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_certs_are_made_once_and_reported(tmp_path: Path) -> None:
    env = mesh_environment(tmp_path)
    first = _metaagent(env, "certs")
    assert first.returncode == 0
    assert "ca.pem" in first.stdout
    assert (tmp_path / "certs" / "gateway.pem").exists()
    assert "all current" in _metaagent(env, "certs").stdout


def test_a_token_carries_tenant_and_role_and_verifies_with_the_dev_secret(tmp_path: Path) -> None:
    env = mesh_environment(tmp_path)
    result = _metaagent(env, "token", "--tenant", "demo", "--role", "tenant-admin")
    assert result.returncode == 0
    secret = (tmp_path / "jwt_secret").read_text().strip()
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["tenantId"], claims["role"]) == ("demo", "tenant-admin")
    assert claims["exp"] - claims["iat"] == 3600
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    result = _metaagent(mesh_environment(tmp_path), "token", "--tenant", "demo", "--role", "root")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_status_reports_every_component_unreachable_when_nothing_runs(tmp_path: Path) -> None:
    env = mesh_environment(tmp_path)
    _metaagent(env, "certs")
    result = _metaagent(env, "status", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert {row["name"]: row["status"] for row in report["components"]} == {
        name: "UNREACHABLE"
        for name in ("context", "retrieval", "llm", "speech", "orchestrator", "gateway")
    }
