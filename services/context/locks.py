"""The per-session lock port: a lease with a TTL and a fencing token, and its in-process adapter.

One turn at a time per session: the orchestrator holds the lease while it works. Each grant
carries a fencing token larger than every earlier one for that session, so a holder whose lease
expired (a pause, a crash) can be recognised and refused by whatever it writes to. Tokens are
at least the current time in microseconds, so they keep growing across a restart of the
in-process adapter or the loss of Redis's counter, and stores that remember the last token
never lock out a new holder.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Lease:
    fencing_token: int
    expires_at: float
    """Wall-clock seconds (time.time()) when the lease lapses unless released first."""


class SessionLocks(Protocol):
    async def acquire(
        self, tenant_id: str, session_id: str, ttl: float, wait: float
    ) -> Lease | None:
        """The lease, or None when another holder keeps it for longer than `wait` seconds."""

    async def release(self, tenant_id: str, session_id: str, fencing_token: int) -> bool:
        """Release the lease if `fencing_token` still holds it; False otherwise."""

    async def latest_token(self, tenant_id: str, session_id: str) -> int:
        """The newest fencing token granted for the session (0 if none)."""

    async def close(self) -> None: ...


POLL_SECONDS = 0.02


async def acquire_with_wait(
    try_once: "TryAcquire", tenant_id: str, session_id: str, ttl: float, wait: float
) -> Lease | None:
    """Poll `try_once` until it grants a lease or `wait` seconds have passed."""
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        lease = await try_once(tenant_id, session_id, ttl)
        if lease is not None or time.monotonic() >= deadline:
            return lease
        await asyncio.sleep(POLL_SECONDS)


class TryAcquire(Protocol):
    async def __call__(self, tenant_id: str, session_id: str, ttl: float) -> Lease | None: ...


class MemoryLocks:
    """In-process leases (embedded profile: one context process)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[int, float]] = {}
        self._fences: dict[tuple[str, str], int] = {}

    async def _try_once(self, tenant_id: str, session_id: str, ttl: float) -> Lease | None:
        key = (tenant_id, session_id)
        now = time.time()
        held = self._held.get(key)
        if held is not None and held[1] > now:
            return None
        token = max(self._fences.get(key, 0) + 1, time.time_ns() // 1000)
        self._fences[key] = token
        self._held[key] = (token, now + ttl)
        return Lease(token, now + ttl)

    async def acquire(
        self, tenant_id: str, session_id: str, ttl: float, wait: float
    ) -> Lease | None:
        return await acquire_with_wait(self._try_once, tenant_id, session_id, ttl, wait)

    async def release(self, tenant_id: str, session_id: str, fencing_token: int) -> bool:
        key = (tenant_id, session_id)
        held = self._held.get(key)
        if held is None or held[0] != fencing_token or held[1] <= time.time():
            return False
        del self._held[key]
        return True

    async def latest_token(self, tenant_id: str, session_id: str) -> int:
        return self._fences.get((tenant_id, session_id), 0)

    async def close(self) -> None:
        self._held.clear()
