"""Cache, session locks and idempotency claims on Redis (redis-py asyncio).

Keys carry the tenant, and the keys one script touches share a hash tag, so the scripts also
run on a clustered Redis (Azure Cache for Redis, Premium). Redis errors surface as UNAVAILABLE;
the cache is wrapped by `FallbackCache` so that a Redis outage only costs speed.
"""

import base64
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from services.context.idempotency import Claim, ClaimState, fingerprint_conflict
from services.context.locks import Lease, acquire_with_wait
from services.mesh.errors import unavailable
from services.mesh.redis_client import redis_client

ACQUIRE = """
if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[1]) then
  local now = redis.call('TIME')
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local token = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, floor)
  redis.call('SET', KEYS[2], string.format('%d', token))
  redis.call('SET', KEYS[1], string.format('%d', token), 'PX', ARGV[1])
  return string.format('%d', token)
end
return '0'
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
BEGIN = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'claimed', ARGV[1], redis.call('PTTL', KEYS[1])}
end
return {'existing', current, redis.call('PTTL', KEYS[1])}
"""
INVALIDATE = """
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""
SET_IF_GENERATION = """
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
GENERATION_TTL_MS = 86_400_000
FORGET_BATCH = 500
REPLACE_IF_CLAIMED = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local record = cjson.decode(current)
if record.claim ~= ARGV[1] or record.state ~= 'claimed' then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  local replacement = cjson.decode(ARGV[2])
  replacement.fp = record.fp
  redis.call('SET', KEYS[1], cjson.encode(replacement), 'PX', ARGV[3])
end
return 1
"""


def connect(url: str) -> Any:
    return redis_client(url)


def _unavailable(error: RedisError | OSError) -> Exception:
    return unavailable(f"redis is unavailable: {type(error).__name__}", retry_after=1.0)


class RedisCache:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._invalidate = client.register_script(INVALIDATE)
        self._set_if = client.register_script(SET_IF_GENERATION)

    @staticmethod
    def _keys(key: str) -> list[str]:
        return [f"metaagent:cache:{{{key}}}", f"metaagent:cache-gen:{{{key}}}"]

    async def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = await self._client.get(self._keys(key)[0])
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            await self._client.set(self._keys(key)[0], value, ex=ttl_seconds)
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None

    async def generation(self, key: str) -> int:
        try:
            return int(await self._client.get(self._keys(key)[1]) or 0)
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None

    async def set_if_generation(
        self, key: str, value: bytes, ttl_seconds: int, generation: int
    ) -> bool:
        try:
            done = await self._set_if(keys=self._keys(key), args=[generation, value, ttl_seconds])
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return bool(done)

    async def delete(self, key: str, *, required: bool = False) -> None:
        try:
            await self._invalidate(keys=self._keys(key), args=[GENERATION_TTL_MS])
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None

    async def close(self) -> None:
        """The shared client belongs to `Coordination`, which closes it."""


class RedisLocks:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)

    @staticmethod
    def _keys(tenant_id: str, session_id: str) -> list[str]:
        tag = f"{{{tenant_id}:{session_id}}}"
        return [f"metaagent:lock:{tag}", f"metaagent:fence:{tag}"]

    async def _try_once(self, tenant_id: str, session_id: str, ttl: float) -> Lease | None:
        try:
            token = int(
                await self._acquire(keys=self._keys(tenant_id, session_id), args=[int(ttl * 1000)])
            )
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return Lease(token, time.time() + ttl) if token else None

    async def acquire(
        self, tenant_id: str, session_id: str, ttl: float, wait: float
    ) -> Lease | None:
        return await acquire_with_wait(self._try_once, tenant_id, session_id, ttl, wait)

    async def release(self, tenant_id: str, session_id: str, fencing_token: int) -> bool:
        try:
            released = await self._release(
                keys=self._keys(tenant_id, session_id)[:1], args=[str(fencing_token)]
            )
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return bool(released)

    async def latest_token(self, tenant_id: str, session_id: str) -> int:
        try:
            token = await self._client.get(self._keys(tenant_id, session_id)[1])
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return int(token or 0)

    async def close(self) -> None:
        """The shared client belongs to `Coordination`, which closes it."""


class RedisIdempotency:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._begin = client.register_script(BEGIN)
        self._replace = client.register_script(REPLACE_IF_CLAIMED)

    @staticmethod
    def _key(tenant_id: str, key: str) -> str:
        return f"metaagent:idem:{{{tenant_id}}}:{key}"

    async def begin(self, tenant_id: str, key: str, lease: float, fingerprint: str) -> Claim:
        claim_id = uuid.uuid4().hex
        record = json.dumps({"state": "claimed", "claim": claim_id, "fp": fingerprint})
        try:
            outcome, stored, ttl_ms = await self._begin(
                keys=[self._key(tenant_id, key)], args=[record, int(lease * 1000)]
            )
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        expires_at = time.time() + max(int(ttl_ms), 0) / 1000
        if outcome == b"claimed":
            return Claim(ClaimState.CLAIMED, claim_id, expires_at=expires_at)
        existing = json.loads(stored)
        if fingerprint and existing.get("fp") and fingerprint != existing["fp"]:
            raise fingerprint_conflict(key)
        if existing["state"] == "completed":
            response = base64.b64decode(existing["response"])
            return Claim(ClaimState.COMPLETED, response=response, expires_at=expires_at)
        return Claim(ClaimState.IN_FLIGHT, expires_at=expires_at)

    async def complete(
        self, tenant_id: str, key: str, claim_id: str, response: bytes, retention: float
    ) -> bool:
        record = json.dumps(
            {
                "state": "completed",
                "claim": claim_id,
                "response": base64.b64encode(response).decode(),
            }
        )
        return await self._swap(tenant_id, key, claim_id, record, retention)

    async def abandon(self, tenant_id: str, key: str, claim_id: str) -> bool:
        return await self._swap(tenant_id, key, claim_id, "", 0)

    async def forget(self, tenant_id: str, keys: Sequence[str]) -> int:
        """One DEL per batch: a tenant's keys share a hash tag, so a batch is one slot."""
        names = sorted({self._key(tenant_id, key) for key in keys})
        forgotten = 0
        try:
            for start in range(0, len(names), FORGET_BATCH):
                forgotten += int(await self._client.delete(*names[start : start + FORGET_BATCH]))
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return forgotten

    async def _swap(
        self, tenant_id: str, key: str, claim_id: str, record: str, retention: float
    ) -> bool:
        try:
            done = await self._replace(
                keys=[self._key(tenant_id, key)],
                args=[claim_id, record, max(int(retention * 1000), 1)],
            )
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return bool(done)

    async def close(self) -> None:
        """The shared client belongs to `Coordination`, which closes it."""
