"""Apply the PostgreSQL migrations in order, each in its own transaction, as the owner role.

metaagent migrate --url postgresql://owner@host/db
"""

import logging
from pathlib import Path

log = logging.getLogger("metaagent.migrations")

POSTGRES_DIR = Path(__file__).parent / "postgres"
LOCK_KEY = 0x6D657461  # pg_advisory_xact_lock: one migrator at a time


def postgres_migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in version order."""
    found = []
    for path in sorted(POSTGRES_DIR.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        found.append((version, path.stem, path.read_text()))
    return found


def latest_version() -> int:
    return max(version for version, _, _ in postgres_migrations())


async def migrate_postgres(dsn: str) -> list[str]:
    """Apply what is missing; return the names applied."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await connection.execute("GRANT SELECT ON schema_migrations TO PUBLIC")
        for version, name, sql in postgres_migrations():
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                done = await connection.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = $1", version
                )
                if done:
                    continue
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
                applied.append(name)
                log.info("applied migration %s", name)
    finally:
        await connection.close()
    return applied
