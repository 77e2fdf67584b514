"""A development PKI: one CA and a certificate per mesh identity, made by one command.

Each leaf names its identity three ways: the common name, a DNS SAN (`context`), and a SPIFFE
URI SAN (`spiffe://metaagent.local/context`), which is what authorization trusts. Production
brings its own certificates (cert-manager on AKS) laid out the same way.
"""

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.mesh.identity import ALL_IDENTITIES, identity_among, spiffe_id

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=397)
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class Authority:
    """A CA able to issue leaf certificates."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> "Authority":
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @classmethod
    def load(cls, directory: Path) -> "Authority":
        key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / CA_KEY_FILE} is not an EC key")
        certificate = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
        return cls(key, certificate)

    def issue(self, identity: str) -> tuple[bytes, bytes]:
        """A key and certificate (both PEM) for `identity`, for serving and calling."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        san = x509.SubjectAlternativeName(
            [
                x509.UniformResourceIdentifier(spiffe_id(identity)),
                x509.DNSName(identity),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LEAF_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(san, critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return _key_pem(key), certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> None:
        _write(directory / CA_KEY_FILE, _key_pem(self.key), private=True)
        _write(directory / CA_FILE, self.certificate.public_bytes(serialization.Encoding.PEM))


def ensure_dev_pki(
    directory: Path, identities: Iterable[str] = ALL_IDENTITIES, *, force: bool = False
) -> list[str]:
    """Create the CA and any missing or expiring leaf in `directory`; return what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if force or not _fresh(directory / CA_FILE):
        Authority.create("Meta-Agent development CA").write(directory)
        written.append(CA_FILE)
        force = True
    authority = Authority.load(directory)
    for identity in identities:
        cert_path = directory / f"{identity}.pem"
        if force or not _fresh(cert_path) or not _issued_by(cert_path, authority):
            key_pem, cert_pem = authority.issue(identity)
            _write(directory / f"{identity}.key", key_pem, private=True)
            _write(cert_path, cert_pem)
            written.append(cert_path.name)
    return written


@lru_cache(maxsize=256)
def identity_of(certificate_pem: bytes) -> str | None:
    """The mesh identity a peer certificate proves (its SPIFFE URI SAN), or None. Cached by the
    certificate's bytes: every call from a peer presents the same (already verified) one."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return None
    return identity_among(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def _fresh(path: Path) -> bool:
    if not path.exists():
        return False
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return certificate.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def _issued_by(path: Path, authority: Authority) -> bool:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return certificate.issuer == authority.certificate.subject and _verifies(certificate, authority)


def _verifies(certificate: x509.Certificate, authority: Authority) -> bool:
    try:
        certificate.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError):
        return False
    return True


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
