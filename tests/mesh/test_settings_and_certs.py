"""Settings honour the seed's names; production refuses weak secrets; the dev PKI is sound."""

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from services.mesh.certs import Authority, ensure_dev_pki, identity_of
from services.mesh.identity import ALL_IDENTITIES


def test_the_seeds_variable_names_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", "s" * 40)
    monkeypatch.setenv("HMAC_SECRET", "h" * 40)
    monkeypatch.setenv("CONTEXT_ADDR", "context.internal:7000")
    monkeypatch.setenv("GATEWAY_PORT", "9090")
    settings = GatewaySettings()
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "s" * 40
    assert settings.address_of("context") == "context.internal:7000"
    assert settings.gateway_url == "http://127.0.0.1:9090"
    assert "s" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("jwt", "hmac"),
    [(None, None), ("changeme", "h" * 40), ("s" * 40, "secret"), ("short", "h" * 40)],
)
def test_production_refuses_missing_or_default_secrets(
    monkeypatch: pytest.MonkeyPatch, jwt: str | None, hmac: str | None
) -> None:
    monkeypatch.setenv("METAAGENT_ENV", "production")
    for name, value in (("JWT_SECRET", jwt), ("HMAC_SECRET", hmac)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="production refuses"):
        GatewaySettings()


def test_production_starts_with_real_secrets_audience_and_issuer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METAAGENT_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", "x9" * 20)
    monkeypatch.setenv("HMAC_SECRET", "y8" * 20)
    with pytest.raises(ValidationError, match="JWT_AUDIENCE, JWT_ISSUER"):
        GatewaySettings()
    monkeypatch.setenv("JWT_AUDIENCE", "metaagent-gateway")
    monkeypatch.setenv("JWT_ISSUER", "https://login.example/tenant")
    monkeypatch.setenv("GATEWAY_REPLAY_CACHE_URL", "redis://redis:6379/0")
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_URL", "redis://redis:6379/1")
    assert GatewaySettings().production


def test_dev_pki_names_each_identity_in_its_san(tmp_path: Path) -> None:
    written = ensure_dev_pki(tmp_path)
    assert set(written) == {"ca.pem", *(f"{i}.pem" for i in ALL_IDENTITIES)}
    for identity in ALL_IDENTITIES:
        pem = (tmp_path / f"{identity}.pem").read_bytes()
        assert identity_of(pem) == identity
        certificate = x509.load_pem_x509_certificate(pem)
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert identity in san.get_values_for_type(x509.DNSName)
        assert (tmp_path / f"{identity}.key").stat().st_mode & 0o077 == 0


def test_dev_pki_is_reused_and_reissued_only_when_needed(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    assert ensure_dev_pki(tmp_path) == []
    (tmp_path / "llm.pem").unlink()
    assert ensure_dev_pki(tmp_path) == ["llm.pem"]
    assert set(ensure_dev_pki(tmp_path, force=True)) >= {"ca.pem", "llm.pem"}


def test_a_leaf_from_another_ca_is_replaced(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    _key, cert = Authority.create("other").issue("llm")
    (tmp_path / "llm.pem").write_bytes(cert)
    assert ensure_dev_pki(tmp_path) == ["llm.pem"]


def test_identity_of_rejects_foreign_or_missing_spiffe_ids() -> None:
    assert identity_of(b"not a certificate") is None
    authority = Authority.create("ca")
    _, cert = authority.issue("not-a-mesh-identity")
    assert identity_of(cert) is None


def test_leaf_certificates_expire_within_about_a_year(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "gateway.pem").read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime < dt.timedelta(days=400)
