"""RS256/ES256 verification keys from a JWKS URL (`JWT_JWKS_URL`, e.g. Entra ID's `jwks_uri`).

Keys are fetched with httpx and kept for `JWT_JWKS_CACHE_SECONDS`. A token naming an unknown
`kid` triggers a refetch (key rotation), but no two fetches are closer than
`JWT_JWKS_MIN_REFETCH_SECONDS`, so garbage kids cannot make the gateway hammer the endpoint.

Each key gets exactly one algorithm from its type: RSA → RS256, EC P-256 → ES256 (a JWK `alg`
that disagrees, a private or an encryption key, any other type is skipped); a token's `alg` must
equal its key's. When a fetch fails the keys already held stay in use (an outage of the identity
provider does not log everyone out; rotation removes keys only when the endpoint answers); with
no key held at all, `JwksUnavailable` is raised, which the gateway answers 503.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
from prometheus_client import Counter

from gateway.settings import GatewaySettings

log = logging.getLogger("metaagent.gateway.jwks")
MAX_DOCUMENT_BYTES: Final = 256 * 1024
FETCHES = Counter(
    "meta_agent_gateway_jwks_fetches_total", "JWKS fetches by the gateway, by outcome.", ["outcome"]
)


class JwksUnavailable(Exception):
    """No verification key is held and the JWKS endpoint cannot be fetched now."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    """The one algorithm a token verified by this key may use: RS256 or ES256."""
    key: Any


def _algorithm_of(jwk: dict[str, Any]) -> str | None:
    if jwk.get("kty") == "RSA":
        expected = "RS256"
    elif jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        expected = "ES256"
    else:
        return None
    if jwk.get("alg", expected) != expected or jwk.get("use", "sig") != "sig" or "d" in jwk:
        return None
    return expected


def parse_jwks(document: object) -> dict[str, VerificationKey]:
    """The usable signing keys of a JWKS document, by kid; ValueError when it is not a JWKS."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue
        algorithm = _algorithm_of(jwk)
        if algorithm is None:
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm).key
        except jwt.PyJWTError:
            continue
        keys[jwk["kid"]] = VerificationKey(jwk["kid"], algorithm, key)
    return keys


class JwksKeys:
    """The key set behind one JWKS URL, fetched lazily, cached and refetched sparingly."""

    def __init__(
        self,
        settings: GatewaySettings,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.jwt_jwks_url:
            raise ValueError("JWT_JWKS_URL is not set")
        self.url = settings.jwt_jwks_url
        self.clock = clock
        self._settings = settings
        self._client = client
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> VerificationKey | None:
        """The key named `kid`, None when the (fresh) key set has none such."""
        if self._fresh() and kid in self._keys:
            return self._keys[kid]
        async with self._lock:  # one fetch at a time; waiters see its result
            if not (self._fresh() and kid in self._keys) and self._may_fetch():
                await self._fetch()
        if kid in self._keys:
            return self._keys[kid]
        if self._fetched_at is None:
            raise JwksUnavailable("no JWKS has been fetched")
        return None

    def retry_after(self) -> float:
        """Seconds until the next fetch may be tried (at least one)."""
        if self._attempted_at is None:
            return 1.0
        waited = self.clock() - self._attempted_at
        return max(1.0, self._settings.jwt_jwks_min_refetch_seconds - waited)

    def _fresh(self) -> bool:
        age = None if self._fetched_at is None else self.clock() - self._fetched_at
        return age is not None and age < self._settings.jwt_jwks_cache_seconds

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None
            or self.clock() - self._attempted_at >= self._settings.jwt_jwks_min_refetch_seconds
        )

    async def _fetch(self) -> None:
        self._attempted_at = self.clock()
        try:
            keys = parse_jwks(json.loads(await self._download()))
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as error:
            FETCHES.labels("failed").inc()
            log.warning("JWKS fetch from %s failed: %s: %s", self.url, type(error).__name__, error)
            return
        FETCHES.labels("ok").inc()
        self._keys, self._fetched_at = keys, self.clock()
        log.info("JWKS fetched from %s: %d signing keys", self.url, len(keys))

    async def _download(self) -> bytes:
        timeout = self._settings.jwt_jwks_timeout_seconds
        async with self._client.stream("GET", self.url, timeout=timeout) as response:
            if response.status_code != 200:
                raise ValueError(f"JWKS endpoint answered {response.status_code}")
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > MAX_DOCUMENT_BYTES:
                    raise ValueError("JWKS document too large")
            return bytes(received)

    async def close(self) -> None:
        await self._client.aclose()


def open_jwks(settings: GatewaySettings) -> JwksKeys | None:
    """The JWKS key set when `JWT_JWKS_URL` is set, with its own HTTP client."""
    if not settings.jwt_jwks_url:
        return None
    return JwksKeys(settings, httpx.AsyncClient(follow_redirects=False))
