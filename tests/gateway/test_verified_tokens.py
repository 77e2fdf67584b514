"""The HS256 verification cache (gateway/auth.py, VerifiedTokens): a held token gives the same
principal a full verification would, and only while a full verification would still pass."""

import time
from pathlib import Path

import pytest

from gateway import auth
from gateway.auth import AuthError, VerifiedTokens, authenticate, ensure_dev_jwt_secret
from gateway.settings import GatewaySettings


def _settings(state_dir: Path, **values: object) -> GatewaySettings:
    return GatewaySettings(state_dir=state_dir, jwt_secret="k" * 40, **values)


def _token(settings: GatewaySettings, **claims: object) -> str:
    issued = int(time.time()) - 10
    payload = {"sub": "agent-1", "tenantId": "demo", "role": "agent", "iat": issued, "nbf": issued}
    payload |= {"exp": issued + 600, **claims}
    return auth.jwt.encode(payload, ensure_dev_jwt_secret(settings), algorithm="HS256")


async def test_a_held_token_gives_the_principal_of_a_full_verification(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    key, verified = ensure_dev_jwt_secret(settings), VerifiedTokens()
    token = _token(settings)
    full = await authenticate(f"Bearer {token}", settings, key)
    first = await authenticate(f"Bearer {token}", settings, key, verified=verified)
    assert first == full
    assert verified.get(token, key, settings) == full
    assert await authenticate(f"Bearer {token}", settings, key, verified=verified) is first


async def test_refused_tokens_are_never_held(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    key, verified = ensure_dev_jwt_secret(settings), VerifiedTokens()
    bad = _token(settings)[:-2] + "xx"
    for _ in range(2):
        with pytest.raises(AuthError) as refused:
            await authenticate(f"Bearer {bad}", settings, key, verified=verified)
        assert refused.value.status == 401
    assert verified.get(bad, key, settings) is None


async def test_a_changed_setting_or_key_verifies_in_full_again(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    key, verified = ensure_dev_jwt_secret(settings), VerifiedTokens()
    token = _token(settings)
    await authenticate(f"Bearer {token}", settings, key, verified=verified)
    assert verified.get(token, b"another key", settings) is None
    settings.jwt_audience = "api://metaagent"  # the token names no audience: refused now
    with pytest.raises(AuthError) as refused:
        await authenticate(f"Bearer {token}", settings, key, verified=verified)
    assert refused.value.status == 401


async def test_near_and_past_expiry_the_token_is_verified_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, jwt_leeway_seconds=0)
    key, verified = ensure_dev_jwt_secret(settings), VerifiedTokens()
    now = int(time.time())
    token = _token(settings, exp=now + 5)
    await authenticate(f"Bearer {token}", settings, key, verified=verified)
    assert verified.get(token, key, settings) is not None
    later = now + 4.5  # inside exp, but within the margin: not served from the cache
    monkeypatch.setattr(auth.time, "time", lambda: later)
    assert verified.get(token, key, settings) is None


async def test_before_nbf_the_token_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, jwt_leeway_seconds=30)
    key, verified = ensure_dev_jwt_secret(settings), VerifiedTokens()
    now = int(time.time())
    token = _token(settings, nbf=now + 20)  # accepted thanks to the leeway
    await authenticate(f"Bearer {token}", settings, key, verified=verified)
    monkeypatch.setattr(auth.time, "time", lambda: now - 15)  # before nbf - leeway + margin
    assert verified.get(token, key, settings) is None


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    verified = VerifiedTokens(limit=2)
    principal = auth.Principal("s", "demo", "agent")
    now = int(time.time())
    for name in ("a", "b", "c"):
        verified.put(name, b"k", settings, principal, {"iat": now, "exp": now + 600})
    assert verified.get("a", b"k", settings) is None
    assert verified.get("c", b"k", settings) == principal
