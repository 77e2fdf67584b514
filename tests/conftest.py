"""Fixtures shared by every test: the development PKI, settings and in-process servers.

Tests that need a real Redis or PostgreSQL take the `redis_url` / `postgres_dsn` fixtures; proto
checks need buf. They skip when the server or tool is missing on a developer's machine; under CI
(`CI=true`) such a skip fails the run instead, so nothing required can pass silently.
"""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.mesh.certs import Authority, ensure_dev_pki
from services.mesh.settings import MeshSettings
from tests.support.postgres import ThrowawayDatabase, create_test_database, drop_test_database

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

pytest_plugins = [
    "tests.support.ci_guard",
    "tests.support.inprocess_mesh",
    "tests.support.public_api",
    "pytester",
]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    request.node.add_marker("needs_redis")
    if not _reachable("127.0.0.1", 6379):
        pytest.skip("needs a Redis server on 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def postgres_dsn(request: pytest.FixtureRequest) -> str:
    request.node.add_marker("needs_postgres")
    if not _reachable("127.0.0.1", 5432):
        pytest.skip("needs a PostgreSQL server on 127.0.0.1:5432")
    return POSTGRES_DSN


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[ThrowawayDatabase | None]:
    if not _reachable("127.0.0.1", 5432):
        yield None
        return
    database = create_test_database(POSTGRES_DSN)
    yield database
    drop_test_database(database)


@pytest.fixture
def postgres_database(
    request: pytest.FixtureRequest, _postgres_database: ThrowawayDatabase | None
) -> ThrowawayDatabase:
    """A migrated database shared by the session; tests keep apart by using their own tenants."""
    request.node.add_marker("needs_postgres")
    if _postgres_database is None:
        pytest.skip("needs a PostgreSQL server on 127.0.0.1:5432")
    return _postgres_database


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory holding a complete development PKI."""
    directory = tmp_path_factory.mktemp("state")
    ensure_dev_pki(directory / "certs")
    return directory


@pytest.fixture(scope="session")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates for the mesh's identities, issued by a CA the mesh does not trust."""
    directory = tmp_path_factory.mktemp("foreign") / "certs"
    directory.mkdir()
    authority = Authority.create("Someone else's CA")
    authority.write(directory)
    for identity in ("orchestrator", "gateway", "operator"):
        key, cert = authority.issue(identity)
        (directory / f"{identity}.key").write_bytes(key)
        (directory / f"{identity}.pem").write_bytes(cert)
    return directory


@pytest.fixture
def settings(state_dir: Path) -> MeshSettings:
    return MeshSettings(state_dir=state_dir, grpc_shutdown_grace_seconds=1.0)
