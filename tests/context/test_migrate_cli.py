"""`metaagent migrate` applies what is missing, once."""

import os
import subprocess
import sys
import uuid

import asyncpg

from tests.support.mesh_process import ROOT
from tests.support.postgres import OWNER_ROLE, ThrowawayDatabase


async def test_migrate_applies_each_migration_once(postgres_database: ThrowawayDatabase) -> None:
    name = f"metaagent_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_database.admin_dsn)
    await admin.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
    owner_dsn = postgres_database.owner_dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        runs = [
            subprocess.run(
                [sys.executable, "-m", "cli", "migrate", "--url", owner_dsn],
                cwd=ROOT,
                env=dict(os.environ),
                capture_output=True,
                text=True,
                timeout=60,
            )
            for _ in range(2)
        ]
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr
    assert "0001_sessions_turns_tenants_outbox" in runs[0].stdout
    assert "nothing, the schema is current" in runs[1].stdout
