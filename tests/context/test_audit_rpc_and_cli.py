"""Audit over gRPC (append, list, verify) and `metaagent audit verify` on the same store."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from google.protobuf import struct_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from tests.support.context_service import context_service
from tests.support.mesh_process import ROOT


def _verify_cli(store_url: str, tenant: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTEXT_STORE_URL": store_url}
    return subprocess.run(
        [sys.executable, "-m", "cli", "audit", "verify", "--tenant", tenant, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_audit_through_the_service_and_the_command(state_dir: Path, tmp_path: Path) -> None:
    database = tmp_path / "context.db"
    store_url = f"sqlite:///{database}"
    async with context_service(state_dir, store_url=store_url) as client_settings:
        clients = MeshClients(client_settings, "gateway")
        try:
            for n in range(3):
                payload = struct_pb2.Struct()
                payload.update({"docId": f"doc-{n}"})
                call = correlation.CallContext(correlation_id=f"corr-a{n}", tenant_id="demo")
                with correlation.bound(call):
                    appended = await clients.context.AppendAudit(
                        pb.AppendAuditRequest(action="knowledge_ingested", payload=payload)
                    )
            with correlation.bound(correlation.CallContext(correlation_id="c", tenant_id="demo")):
                listed = await clients.context.ListAudit(pb.ListAuditRequest(page_size=2))
                intact = await clients.context.VerifyAudit(pb.VerifyAuditRequest())
                intact_cli = _verify_cli(store_url, "demo")
                connection = sqlite3.connect(database)
                connection.execute("DROP TRIGGER audit_logs_no_update")
                connection.execute(
                    'UPDATE audit_logs SET payload = \'{"docId": "forged"}\' WHERE sequence = 2'
                )
                connection.commit()
                connection.close()
                broken = await clients.context.VerifyAudit(pb.VerifyAuditRequest())
                broken_cli = _verify_cli(store_url, "demo")
        finally:
            await clients.close()
    assert (appended.entry.actor, appended.entry.correlation_id) == ("gateway", "corr-a2")
    assert [e.sequence for e in listed.entries] == [1, 2]
    assert listed.next_page_token == "2"
    assert (intact.valid, intact.entries_checked) == (True, 3)
    assert intact.head_hash == appended.entry.hash
    assert intact_cli.returncode == 0, intact_cli.stderr
    assert json.loads(intact_cli.stdout)["valid"] is True
    assert (broken.valid, broken.first_invalid_sequence) == (False, 2)
    assert broken.first_invalid_reason.startswith("hash mismatch")
    assert broken_cli.returncode == 1
    assert json.loads(broken_cli.stdout)["first_invalid_sequence"] == 2
