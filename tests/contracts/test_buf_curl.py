"""An external gRPC client (`buf curl`) over mTLS: reflection, health and a real call."""

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from services.llm.app import build_server
from services.llm.settings import LlmSettings
from tests.contracts.test_buf import BUF, ROOT
from tests.support.servers import started

pytestmark = pytest.mark.needs_buf


def _curl(certs: Path, identity: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.skip("buf is installed by `make test` through npm (@bufbuild/buf)")
    command = [
        str(BUF),
        "curl",
        "--protocol",
        "grpc",
        "--cacert",
        str(certs / "ca.pem"),
        "--cert",
        str(certs / f"{identity}.pem"),
        "--key",
        str(certs / f"{identity}.key"),
        "--servername",
        "llm",
        *args,
        url,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


async def test_buf_curl_lists_services_checks_health_and_calls_with_metadata(
    state_dir: Path,
) -> None:
    certs = state_dir / "certs"
    settings = LlmSettings(state_dir=state_dir, grpc_listen_addr="127.0.0.1:0")
    async with started(build_server(settings)) as address:
        base = f"https://{address}"
        listed = await asyncio.to_thread(_curl, certs, "operator", base, "--list-services")
        assert "metaagent.llm.v1.LlmService" in listed.stdout.split(), listed.stderr
        health = await asyncio.to_thread(
            _curl, certs, "operator", f"{base}/grpc.health.v1.Health/Check", "--data", "{}"
        )
        assert json.loads(health.stdout) == {"status": "SERVING"}
        body = json.dumps(
            {"prompt": {"userText": "hola", "tenant": {"tenantId": "demo", "language": "es"}}}
        )
        generate = f"{base}/metaagent.llm.v1.LlmService/Generate"
        denied = await asyncio.to_thread(_curl, certs, "operator", generate, "--data", body)
        assert denied.returncode != 0
        assert "permission_denied" in denied.stderr.lower()
        answered = await asyncio.to_thread(
            _curl,
            certs,
            "orchestrator",
            generate,
            "--data",
            body,
            "--header",
            "x-correlation-id: corr-curl",
            "--header",
            "x-tenant-id: demo",
        )
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["generation"]["model"] == "offline"
