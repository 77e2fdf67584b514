"""A throwaway PostgreSQL database, set up the way production is: migrations applied by an
owner role, the service connected as a login role that only belongs to `metaagent_app` (owns
nothing, no BYPASSRLS). The tests make one per session (tests/conftest.py); the context
benchmark one per run (bench/context_sessions.py)."""

import asyncio
import os
import secrets
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.context.migrations.runner import migrate_postgres

T = TypeVar("T")
OWNER_ROLE = "metaagent_owner_test"
APP_ROLE = "metaagent_context_test"
RELAY_ROLE = "metaagent_relay_test"


@dataclass(frozen=True)
class ThrowawayDatabase:
    admin_dsn: str
    owner_dsn: str
    app_dsn: str
    relay_dsn: str
    name: str


def _with(dsn: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if user:
        netloc = f"{user}@{netloc}"
    elif "@" in parts.netloc:
        netloc = parts.netloc
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


async def _create(admin_dsn: str) -> ThrowawayDatabase:
    name = f"metaagent_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        logins = ((OWNER_ROLE, "LOGIN CREATEROLE"), (APP_ROLE, "LOGIN"), (RELAY_ROLE, "LOGIN"))
        for role, options in logins:
            exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await admin.execute(f"CREATE ROLE {role} {options} NOSUPERUSER NOBYPASSRLS")
        await admin.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
    finally:
        await admin.close()
    owner_dsn = _with(admin_dsn, user=OWNER_ROLE, database=name)
    await migrate_postgres(owner_dsn)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute(f"GRANT metaagent_app TO {APP_ROLE}")
        await owner.execute(f"GRANT metaagent_relay TO {RELAY_ROLE}")
    finally:
        await owner.close()
    return ThrowawayDatabase(
        admin_dsn,
        owner_dsn,
        _with(admin_dsn, user=APP_ROLE, database=name),
        _with(admin_dsn, user=RELAY_ROLE, database=name),
        name,
    )


async def _drop(database: ThrowawayDatabase) -> None:
    admin = await asyncpg.connect(database.admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {database.name} WITH (FORCE)")
    finally:
        await admin.close()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a loop of its own thread: fixtures may be set up while a test loop runs."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def create_test_database(admin_dsn: str) -> ThrowawayDatabase:
    return _run(_create(admin_dsn))


def drop_test_database(database: ThrowawayDatabase) -> None:
    _run(_drop(database))
