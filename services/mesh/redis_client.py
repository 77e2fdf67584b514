"""One way to open an asyncio Redis client from a URL, with the driver imported lazily and
short timeouts, so that an outage costs each caller a bounded wait."""

from typing import Any


def redis_client(url: str, timeout: float = 1.0) -> Any:
    """A `redis.asyncio` client for `redis://…` / `rediss://…` (connect and I/O `timeout`)."""
    from redis import asyncio as redis_asyncio

    return redis_asyncio.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
