"""Readiness checks for the servers a component depends on (see `MeshServer(readiness=...)`).

Each returns an async callable that returns when the dependency answers and raises
`ConnectionError` (naming the dependency, never its credentials) while it does not.
"""

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from services.mesh.redis_client import redis_client

ReadinessCheck = Callable[[], Awaitable[None]]
"""Returns when a dependency is usable, raises while it is not."""


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"


def redis_ready(url: str, timeout: float = 2.0) -> ReadinessCheck:
    """PING the Redis server at `url`."""

    async def check() -> None:
        from redis.exceptions import RedisError

        client = redis_client(url, timeout)
        try:
            await client.ping()
        except (RedisError, OSError) as error:
            raise ConnectionError(f"redis at {_where(url)} is not answering: {error}") from None
        finally:
            await client.aclose()

    return check


def postgres_ready(dsn: str, timeout: float = 2.0) -> ReadinessCheck:
    """Run `SELECT 1` on the PostgreSQL server at `dsn`."""

    async def check() -> None:
        import asyncpg

        try:
            connection = await asyncpg.connect(dsn, timeout=timeout)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            raise ConnectionError(
                f"postgres at {_where(dsn)} is not answering: {type(error).__name__}"
            ) from None
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    return check
