"""`metaagent token`: development tokens only, for a well-formed tenant and a lifetime the
gateway accepts, and no secret in what it prints when the settings are wrong."""

from pathlib import Path

import jwt
import pytest

from cli.main import main


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("METAAGENT_ENV", "JWT_SECRET", "JWT_AUDIENCE", "JWT_ISSUER", "HMAC_CLIENTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("METAAGENT_STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_token_names_its_tenant_role_and_subject(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--tenant", "shop-1", "--role", "platform-admin", "--sub", "ops"]) == 0
    secret = (state_dir / "jwt_secret").read_text().strip()
    claims = jwt.decode(capsys.readouterr().out.strip(), secret, algorithms=["HS256"])
    assert (claims["tenantId"], claims["role"], claims["sub"]) == (
        "shop-1",
        "platform-admin",
        "ops",
    )


def test_production_is_refused_even_with_a_real_secret(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METAAGENT_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", "p" * 48)
    assert main(["token", "--tenant", "demo", "--role", "platform-admin"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "METAAGENT_ENV=production" in err
    assert not (state_dir / "jwt_secret").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "my shop"], "--tenant must match"),
        (["--tenant", "demo", "--sub", " "], "--sub must not be empty"),
        (["--tenant", "demo", "--ttl", "0"], "--ttl must be between 1 and 86400"),
        (["--tenant", "demo", "--ttl", "86401"], "--ttl must be between 1 and 86400"),
    ],
)
def test_a_token_the_gateway_would_refuse_is_not_made(
    state_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["token", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_invalid_settings_are_named_without_their_secrets(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "do-not-print-me-0123456789abcdef"
    monkeypatch.setenv("HMAC_CLIENTS", f'{{"crm": {{"secret": "{secret}", "tenantId": "a b"}}}}')
    assert main(["token", "--tenant", "demo"]) == 1
    err = capsys.readouterr().err
    assert "HMAC_CLIENTS.crm.tenantId" in err and secret[-12:] not in err
