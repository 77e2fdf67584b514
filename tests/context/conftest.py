"""Fixtures of the context service's store tests: every adapter, and a tenant per test."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.context.coordination import Coordination, open_coordination
from services.context.store import SessionStore, open_store


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, url) of each store adapter: a SQLite file, the session's PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'context.db'}"
    return "postgres", request.getfixturevalue("postgres_database").app_dsn


@pytest.fixture
async def store(store_backend: tuple[str, str]) -> AsyncIterator[SessionStore]:
    opened = open_store(store_backend[1])
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def tenant() -> str:
    """A tenant of this test only, so tests sharing a database or Redis never meet."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis"])
async def coordination(request: pytest.FixtureRequest) -> AsyncIterator[Coordination]:
    """Cache, leases and claims on each adapter: in-process, and the shared Redis."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    opened = open_coordination(url)
    yield opened
    await opened.close()
