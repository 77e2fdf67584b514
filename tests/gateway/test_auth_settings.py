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


def production(**values: object) -> GatewaySettings:
    return GatewaySettings(**{"environment": "production", **SCOPED, **values})


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
