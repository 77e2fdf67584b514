"""The authentication settings: production validation with JWKS and HMAC clients, the HS256
key, and the lifecycle of the app's `Security`."""

import time
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from gateway.auth import AuthError, authenticate, hs256_key
from gateway.security import close_security, open_security
from gateway.settings import GatewaySettings
from tests.gateway.test_security import secure_gateway

SCOPED = {"jwt_audience": "api://metaagent", "jwt_issuer": "https://login.example/t/v2.0"}
JWKS = "https://login.example/t/discovery/v2.0/keys"
SHARED = {"replay_cache_url": "redis://redis:6379/0", "rate_limit_url": "rediss://redis:6380/1"}
"""Production's replay cache and rate counters: shared by every replica."""


def production(**values: object) -> GatewaySettings:
    return GatewaySettings(**{"environment": "production", **SCOPED, **SHARED, **values})


def test_production_accepts_a_jwks_without_jwt_secret_and_refuses_hs256() -> None:
    settings = production(jwt_jwks_url=JWKS, hmac_secret="y8" * 20)
    assert hs256_key(settings) is None


async def test_without_an_hs256_key_hs256_tokens_are_401() -> None:
    settings = production(jwt_jwks_url=JWKS, hmac_secret="y8" * 20)
    now = int(time.time())
    claims = {"sub": "u", "tenantId": "demo", "iat": now, "exp": now + 60} | {
        "aud": SCOPED["jwt_audience"],
        "iss": SCOPED["jwt_issuer"],
    }
    token = jwt.encode(claims, "x" * 40, "HS256")
    with pytest.raises(AuthError) as refused:
        await authenticate(f"Bearer {token}", settings, None, None)
    assert refused.value.status == 401
    assert "HS256 tokens are not accepted" in refused.value.detail


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hmac_secret": "y8" * 20}, "JWT_SECRET"),
        ({"jwt_jwks_url": JWKS, "jwt_secret": "changeme", "hmac_secret": "y8" * 20}, "JWT_SECRET"),
        ({"jwt_jwks_url": "http://idp.internal/keys", "hmac_secret": "y8" * 20}, "https"),
        ({"jwt_jwks_url": JWKS}, "HMAC_SECRET"),
        (
            {"jwt_jwks_url": JWKS, "hmac_clients": {"crm": {"secret": "short", "tenantId": "a"}}},
            "HMAC_CLIENTS[crm].secret",
        ),
    ],
    ids=["no-key-at-all", "weak-secret-beside-jwks", "plain-http-jwks", "no-hmac", "weak-client"],
)
def test_production_refuses_weak_or_missing_credentials(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match="production refuses") as refused:
        production(**values)
    assert message in str(refused.value)


def test_production_accepts_hmac_clients_without_hmac_secret() -> None:
    clients = {"crm": {"secret": "z7" * 20, "tenantId": "acme", "role": "tenant-admin"}}
    settings = production(jwt_secret="x9" * 20, hmac_clients=clients)
    assert settings.hmac_clients["crm"].role == "tenant-admin"


def test_production_from_the_environment_needs_no_hmac_secret_beside_hmac_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HMAC_SECRET", raising=False)
    for name, value in {
        "METAAGENT_ENV": "production",
        "JWT_SECRET": "x9" * 20,
        "JWT_AUDIENCE": SCOPED["jwt_audience"],
        "JWT_ISSUER": SCOPED["jwt_issuer"],
        "HMAC_CLIENTS": '{"crm": {"secret": "' + "z7" * 20 + '", "tenantId": "acme"}}',
        "GATEWAY_REPLAY_CACHE_URL": SHARED["replay_cache_url"],
        "GATEWAY_RATE_LIMIT_URL": SHARED["rate_limit_url"],
    }.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    assert settings.production and settings.hmac_secret is None
    assert list(settings.hmac_clients) == ["crm"]


VALID_PRODUCTION = {"jwt_secret": "x9" * 20, "hmac_secret": "y8" * 20}


@pytest.mark.parametrize(
    ("urls", "named"),
    [
        ({"replay_cache_url": "memory://"}, ["GATEWAY_REPLAY_CACHE_URL"]),
        ({"rate_limit_url": "memory://"}, ["GATEWAY_RATE_LIMIT_URL"]),
        (
            {"replay_cache_url": "memory://", "rate_limit_url": "memory://"},
            ["GATEWAY_REPLAY_CACHE_URL", "GATEWAY_RATE_LIMIT_URL"],
        ),
    ],
    ids=["replay-cache", "rate-limits", "both"],
)
def test_production_refuses_in_process_replay_cache_and_rate_counters(
    urls: dict[str, str], named: list[str]
) -> None:
    """Per replica, a signature used on one replica would pass again on another, and a rate
    limit would be multiplied by the replicas."""
    with pytest.raises(ValidationError, match="production refuses an in-process") as refused:
        production(**VALID_PRODUCTION, **urls)
    for name in ("GATEWAY_REPLAY_CACHE_URL", "GATEWAY_RATE_LIMIT_URL"):
        assert (name in str(refused.value)) == (name in named), name


def test_production_refuses_the_in_process_defaults_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GATEWAY_REPLAY_CACHE_URL", "GATEWAY_RATE_LIMIT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "METAAGENT_ENV": "production",
        "JWT_SECRET": "x9" * 20,
        "HMAC_SECRET": "y8" * 20,
        "JWT_AUDIENCE": SCOPED["jwt_audience"],
        "JWT_ISSUER": SCOPED["jwt_issuer"],
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="GATEWAY_REPLAY_CACHE_URL, GATEWAY_RATE_LIMIT_URL"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_REPLAY_CACHE_URL", "redis://redis:6379/0")
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_URL", "memory://")
    with pytest.raises(ValidationError, match="in-process") as refused:
        GatewaySettings()
    assert "GATEWAY_REPLAY_CACHE_URL" not in str(refused.value)
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_URL", "redis://redis:6379/1")
    assert GatewaySettings().production


def test_development_keeps_the_in_process_defaults() -> None:
    settings = GatewaySettings()
    assert (settings.replay_cache_url, settings.rate_limit_url) == ("memory://", "memory://")


def test_v2_signatures_are_required_by_default_in_production_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HMAC_REQUIRE_V2", raising=False)
    assert GatewaySettings().hmac_require_v2 is False
    assert production(**VALID_PRODUCTION).hmac_require_v2 is True
    assert production(**VALID_PRODUCTION, hmac_require_v2=False).hmac_require_v2 is False
    monkeypatch.setenv("HMAC_REQUIRE_V2", "true")
    assert GatewaySettings().hmac_require_v2 is True
    monkeypatch.setenv("METAAGENT_ENV", "production")
    monkeypatch.setenv("HMAC_REQUIRE_V2", "false")  # a migration window, chosen explicitly
    assert production(**VALID_PRODUCTION).hmac_require_v2 is False
    monkeypatch.delenv("HMAC_REQUIRE_V2")
    assert production(**VALID_PRODUCTION).hmac_require_v2 is True


def test_production_refuses_a_weak_hmac_secret_even_beside_hmac_clients() -> None:
    clients = {"crm": {"secret": "z7" * 20, "tenantId": "acme"}}
    with pytest.raises(ValidationError, match="production refuses") as refused:
        production(jwt_secret="x9" * 20, hmac_clients=clients, hmac_secret="changeme")
    assert "set HMAC_SECRET (" in str(refused.value)


def test_hmac_clients_are_read_as_json_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HMAC_CLIENTS", '{"crm": {"secret": "s3cr3t-value", "tenantId": "acme"}}')
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_TENANT_PER_MINUTE", "0")
    settings = GatewaySettings()
    crm = settings.hmac_clients["crm"]
    assert (crm.tenant_id, crm.role) == ("acme", "agent")
    assert "s3cr3t-value" not in repr(settings)
    assert settings.rate_limit_tenant_per_minute == 0


@pytest.mark.parametrize(
    "client",
    [
        {"secret": "s", "tenantId": "bad tenant"},
        {"secret": "s", "tenantId": "acme", "role": "root"},
        {"secret": "s"},
        {"secret": "s", "tenantId": "acme", "extra": 1},
    ],
)
def test_malformed_hmac_clients_are_refused(client: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(hmac_clients={"crm": client})


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(rate_limit_client_per_minute=-1)


async def test_security_is_opened_once_and_reopened_after_close(state_dir: Path) -> None:
    async with secure_gateway(state_dir) as gateway:
        first = open_security(gateway.app)
        assert open_security(gateway.app) is first
        assert first.hs_key == b"k" * 40 and first.jwks is None
        await close_security(gateway.app)
        await close_security(gateway.app)  # closing twice is harmless
        assert open_security(gateway.app) is not first
        assert (await gateway.process(gateway.token())).status_code == 200
