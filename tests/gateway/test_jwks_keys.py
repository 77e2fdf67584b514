"""RS256/ES256 tokens verified against a real JWKS endpoint on loopback: caching, rotation,
rate-limited refetches, unknown kids, algorithm confusion, and failing closed."""

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.jwks import VerificationKey, parse_jwks
from gateway.security import open_security
from tests.gateway.test_security import SecureGateway, raw_token, secure_gateway
from tests.support.ports import free_port

RSA_KEYS = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(private: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else None
    if algorithm is None:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(algorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig", **extra}


class JwksServer:
    """A JWKS document on 127.0.0.1, swappable, counting the requests it answers."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.document: Any = {"keys": keys}
        self.status = 200
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps(owner.document).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/discovery/keys"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> "JwksServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    keys = [public_jwk(RSA_KEYS[0], "rsa-1"), public_jwk(EC_KEY, "ec-1")]
    with JwksServer(keys) as server:
        yield server


@pytest.fixture
async def gateway(state_dir: Path, jwks_server: JwksServer) -> AsyncIterator[SecureGateway]:
    async with secure_gateway(state_dir, jwt_jwks_url=jwks_server.url) as running:
        yield running


def clock_of(gateway: SecureGateway) -> Clock:
    clock = Clock()
    jwks = open_security(gateway.app).jwks
    assert jwks is not None
    jwks.clock = clock
    return clock


def rs256(
    gateway: SecureGateway, kid: str = "rsa-1", key: Any = RSA_KEYS[0], **claims: Any
) -> dict[str, str]:
    return gateway.token(key=key, algorithm="RS256", headers={"kid": kid}, **claims)


def es256(gateway: SecureGateway, kid: str = "ec-1", **claims: Any) -> dict[str, str]:
    return gateway.token(key=EC_KEY, algorithm="ES256", headers={"kid": kid}, **claims)


async def test_rs256_and_es256_tokens_are_verified_from_the_jwks(gateway: SecureGateway) -> None:
    assert (await gateway.process(rs256(gateway))).status_code == 200
    reply = await gateway.client.get("/test/whoami", headers=es256(gateway, role="agent"))
    assert reply.json()["role"] == "agent"


async def test_hs256_with_jwt_secret_still_works_beside_the_jwks(gateway: SecureGateway) -> None:
    assert (await gateway.process(gateway.token())).status_code == 200


async def test_keys_are_cached_then_refetched_after_the_ttl(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    clock = clock_of(gateway)
    for _ in range(3):
        assert (await gateway.process(rs256(gateway))).status_code == 200
        assert (await gateway.process(es256(gateway))).status_code == 200
    assert jwks_server.requests == 1
    clock.now += 301
    assert (await gateway.process(rs256(gateway))).status_code == 200
    assert jwks_server.requests == 2


async def test_a_rotated_key_is_fetched_and_a_retired_one_refused(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    clock = clock_of(gateway)
    assert (await gateway.process(rs256(gateway))).status_code == 200
    jwks_server.document = {"keys": [public_jwk(RSA_KEYS[1], "rsa-2")]}
    clock.now += 31
    rotated = rs256(gateway, kid="rsa-2", key=RSA_KEYS[1])
    assert (await gateway.process(rotated)).status_code == 200
    assert jwks_server.requests == 2
    gateway.orchestrator.seen.clear()
    reply = await gateway.process(rs256(gateway))
    problem = await gateway.refused(reply, 401)
    assert "unknown signing key" in problem["detail"]


async def test_unknown_kids_cannot_make_the_gateway_hammer_the_jwks(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    clock = clock_of(gateway)
    assert (await gateway.process(rs256(gateway))).status_code == 200
    gateway.orchestrator.seen.clear()
    for n in range(20):
        reply = await gateway.process(rs256(gateway, kid=f"garbage-{n}"))
        assert "unknown signing key" in (await gateway.refused(reply, 401))["detail"]
    assert jwks_server.requests == 1  # the set was fetched just now: no refetch yet
    clock.now += 30
    for n in range(20):
        await gateway.refused(await gateway.process(rs256(gateway, kid=f"again-{n}")), 401)
    assert jwks_server.requests == 2  # one refetch per interval, however many kids


async def test_a_token_signed_by_another_key_under_a_known_kid_is_401(
    gateway: SecureGateway,
) -> None:
    reply = await gateway.process(rs256(gateway, key=RSA_KEYS[2]))
    problem = await gateway.refused(reply, 401)
    assert "Signature verification failed" in problem["detail"]


async def test_hs256_signed_with_the_rsa_public_key_is_refused(gateway: SecureGateway) -> None:
    """The classic confusion: the attacker HMACs with the public key the JWKS publishes."""
    public_pem = (
        RSA_KEYS[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    claims = {"sub": "x", "tenantId": "demo", "role": "platform-admin", "iat": now, "exp": now + 60}
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    unsigned = raw_token(header, claims).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    token = raw_token(header, claims, mac)
    assert token.startswith(unsigned)
    reply = await gateway.process({"Authorization": f"Bearer {token}"})
    await gateway.refused(reply, 401)


@pytest.mark.parametrize(
    ("algorithm", "kid", "key"),
    [("RS256", "ec-1", RSA_KEYS[0]), ("ES256", "rsa-1", EC_KEY)],
    ids=["rs256-on-ec-key", "es256-on-rsa-key"],
)
async def test_an_algorithm_that_does_not_fit_its_key_is_401(
    gateway: SecureGateway, algorithm: str, kid: str, key: Any
) -> None:
    reply = await gateway.process(gateway.token(key=key, algorithm=algorithm, headers={"kid": kid}))
    problem = await gateway.refused(reply, 401)
    assert "does not fit its key" in problem["detail"]


async def test_none_and_unlisted_algorithms_are_refused_before_any_fetch(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    now = int(time.time())
    claims = {"sub": "x", "tenantId": "demo", "role": "user", "iat": now, "exp": now + 60}
    none = raw_token({"alg": "none", "kid": "rsa-1"}, claims)
    await gateway.refused(await gateway.process({"Authorization": f"Bearer {none}"}), 401)
    for algorithm in ("RS384", "PS256"):
        reply = await gateway.process(
            gateway.token(key=RSA_KEYS[0], algorithm=algorithm, headers={"kid": "rsa-1"})
        )
        assert "not allowed" in (await gateway.refused(reply, 401))["detail"]
    assert jwks_server.requests == 0


async def test_a_token_without_kid_is_401(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.token(key=RSA_KEYS[0], algorithm="RS256"))
    assert "names no kid" in (await gateway.refused(reply, 401))["detail"]


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"iat": int(time.time()) - 900, "exp": int(time.time()) - 300}, "expired"),
        ({"nbf": int(time.time()) + 600, "exp": int(time.time()) + 900}, "not yet valid"),
    ],
    ids=["expired", "not-yet-valid"],
)
async def test_expired_and_not_yet_valid_rs256_tokens_are_401(
    gateway: SecureGateway, claims: dict[str, Any], detail: str
) -> None:
    problem = await gateway.refused(await gateway.process(rs256(gateway, **claims)), 401)
    assert detail in problem["detail"]


async def test_audience_and_issuer_bind_jwks_tokens_too(gateway: SecureGateway) -> None:
    gateway.settings.jwt_audience = "api://metaagent"
    gateway.settings.jwt_issuer = "https://login.example/t/v2.0"
    good = rs256(gateway, aud="api://metaagent", iss="https://login.example/t/v2.0")
    assert (await gateway.process(good)).status_code == 200
    gateway.orchestrator.seen.clear()
    wrong = rs256(gateway, aud="api://other", iss="https://login.example/t/v2.0")
    await gateway.refused(await gateway.process(wrong), 401)


async def test_rs256_without_a_configured_jwks_is_401(state_dir: Path) -> None:
    async with secure_gateway(state_dir) as gateway:
        reply = await gateway.process(rs256(gateway))
        assert "no key set" in (await gateway.refused(reply, 401))["detail"]


async def test_an_unreachable_jwks_with_no_key_held_is_503(state_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/keys"
    async with secure_gateway(state_dir, jwt_jwks_url=url) as gateway:
        reply = await gateway.process(rs256(gateway))
        problem = await gateway.refused(reply, 503, "Service Unavailable")
        assert int(reply.headers["Retry-After"]) >= 1
        assert "cannot be fetched" in problem["detail"]
        assert (await gateway.process(gateway.token())).status_code == 200


async def test_concurrent_tokens_on_a_cold_cache_make_one_fetch(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    replies = await asyncio.gather(*(gateway.process(rs256(gateway)) for _ in range(10)))
    assert [reply.status_code for reply in replies] == [200] * 10
    assert jwks_server.requests == 1


async def test_an_oversized_jwks_document_is_not_trusted(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    jwks_server.document = {"keys": [public_jwk(RSA_KEYS[0], "rsa-1")], "pad": "x" * 300_000}
    await gateway.refused(await gateway.process(rs256(gateway)), 503)


@pytest.mark.parametrize("url", ["http://[::1/keys", "ftp://127.0.0.1/keys"])
async def test_a_malformed_jwks_url_fails_closed(state_dir: Path, url: str) -> None:
    async with secure_gateway(state_dir, jwt_jwks_url=url) as gateway:
        await gateway.refused(await gateway.process(rs256(gateway)), 503)


async def test_a_failing_jwks_is_not_retried_before_the_interval(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    clock = clock_of(gateway)
    jwks_server.status = 500
    for _ in range(5):
        await gateway.refused(await gateway.process(rs256(gateway)), 503)
    assert jwks_server.requests == 1
    jwks_server.status = 200
    clock.now += 30
    assert (await gateway.process(rs256(gateway))).status_code == 200
    assert jwks_server.requests == 2


async def test_held_keys_outlive_a_jwks_outage(
    gateway: SecureGateway, jwks_server: JwksServer
) -> None:
    clock = clock_of(gateway)
    assert (await gateway.process(rs256(gateway))).status_code == 200
    jwks_server.document = {"not": "a jwks"}
    clock.now += 301
    assert (await gateway.process(rs256(gateway))).status_code == 200
    assert jwks_server.requests == 2


def test_only_public_signing_keys_of_known_types_are_kept() -> None:
    private_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEYS[1]))
    p384 = ec.generate_private_key(ec.SECP384R1())
    keys = parse_jwks(
        {
            "keys": [
                public_jwk(RSA_KEYS[0], "rsa-1", alg="RS256"),
                public_jwk(EC_KEY, "ec-1"),
                public_jwk(RSA_KEYS[0], "rsa-ps", alg="PS256"),
                public_jwk(RSA_KEYS[0], "rsa-enc", use="enc"),
                {**private_jwk, "kid": "private"},
                public_jwk(p384, "ec-384"),
                {"kty": "oct", "k": "c2VjcmV0", "kid": "symmetric"},
                {"kty": "RSA", "kid": "broken", "n": "AA", "e": "AQAB"},
                public_jwk(RSA_KEYS[1], "")["n"],
                {k: v for k, v in public_jwk(RSA_KEYS[1], "x").items() if k != "kid"},
            ]
        }
    )
    assert {kid: key.algorithm for kid, key in keys.items()} == {"rsa-1": "RS256", "ec-1": "ES256"}
    assert all(isinstance(key, VerificationKey) for key in keys.values())
    for document in ({"keys": "nope"}, [], "x"):
        with pytest.raises(ValueError, match="not a JWKS"):
            parse_jwks(document)
