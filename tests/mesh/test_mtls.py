"""mTLS on every hop: who is refused at the handshake, who is refused by policy."""

import datetime as dt
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2, status_pb2
from metaagent.llm.v1 import llm_service_pb2_grpc

from services.llm.app import build_server
from services.llm.settings import LlmSettings
from services.mesh.certs import Authority
from services.mesh.clients import open_channel, serving_status
from services.mesh.errors import STATUS_DETAILS_KEY
from services.mesh.settings import MeshSettings
from tests.support.calls import METADATA, demo_prompt
from tests.support.servers import started


@pytest.fixture
async def llm_address(state_dir: Path):
    settings = LlmSettings(state_dir=state_dir, grpc_listen_addr="127.0.0.1:0")
    async with started(build_server(settings)) as address:
        yield address


def _client_settings(state_dir: Path, address: str) -> MeshSettings:
    return MeshSettings(state_dir=state_dir, llm_addr=address, grpc_retry_attempts=1)


async def test_a_service_on_the_allow_list_is_answered(state_dir: Path, llm_address: str) -> None:
    async with open_channel(_client_settings(state_dir, llm_address), "orchestrator", "llm") as ch:
        reply = await llm_service_pb2_grpc.LlmServiceStub(ch).Generate(
            demo_prompt(), metadata=METADATA
        )
    assert reply.generation.model == "offline"


@pytest.mark.parametrize("caller", ["gateway", "operator", "speech", "context"])
async def test_a_valid_certificate_off_the_allow_list_gets_permission_denied(
    state_dir: Path, llm_address: str, caller: str
) -> None:
    async with open_channel(_client_settings(state_dir, llm_address), caller, "llm") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await llm_service_pb2_grpc.LlmServiceStub(ch).Generate(demo_prompt(), metadata=METADATA)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    status = status_pb2.Status.FromString(
        dict(refused.value.trailing_metadata())[STATUS_DETAILS_KEY]
    )
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "CALLER_NOT_ALLOWED"
    assert info.metadata["caller"] == caller


async def test_the_operator_identity_may_read_health(state_dir: Path, llm_address: str) -> None:
    async with open_channel(_client_settings(state_dir, llm_address), "operator", "llm") as ch:
        assert await serving_status(ch) in {"SERVING", "NOT_SERVING"}


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await llm_service_pb2_grpc.LlmServiceStub(channel).Generate(
            demo_prompt(), metadata=METADATA, timeout=3
        )
    return refused.value.code()


async def test_a_client_without_a_certificate_is_refused(state_dir: Path, llm_address: str) -> None:
    ca = (state_dir / "certs" / "ca.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    options = [("grpc.ssl_target_name_override", "llm")]
    async with grpc.aio.secure_channel(llm_address, credentials, options=options) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(
    state_dir: Path, foreign_certs: Path, llm_address: str
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(state_dir / "certs" / "ca.pem").read_bytes(),
        private_key=(foreign_certs / "orchestrator.key").read_bytes(),
        certificate_chain=(foreign_certs / "orchestrator.pem").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "llm")]
    async with grpc.aio.secure_channel(llm_address, credentials, options=options) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_client_is_refused(llm_address: str) -> None:
    async with grpc.aio.insecure_channel(llm_address) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_refuses_a_server_that_is_not_the_service_it_meant(
    state_dir: Path, llm_address: str
) -> None:
    settings = MeshSettings(state_dir=state_dir, context_addr=llm_address, grpc_retry_attempts=1)
    async with open_channel(settings, "orchestrator", "context") as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("name", ["not-a-mesh-identity", "orchestrator@other-domain"])
async def test_a_mesh_ca_certificate_naming_no_mesh_identity_is_unauthenticated(
    state_dir: Path, llm_address: str, name: str
) -> None:
    authority = Authority.load(state_dir / "certs")
    key, certificate = authority.issue(name)
    if "@" in name:  # the right name, in another trust domain
        key, certificate = _issue_with_uri(authority, "spiffe://other.domain/orchestrator")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(state_dir / "certs" / "ca.pem").read_bytes(),
        private_key=key,
        certificate_chain=certificate,
    )
    options = [("grpc.ssl_target_name_override", "llm")]
    async with grpc.aio.secure_channel(llm_address, credentials, options=options) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAUTHENTICATED


def _issue_with_uri(authority: Authority, uri: str) -> tuple[bytes, bytes]:
    """A leaf of the mesh CA whose only URI SAN is `uri`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orchestrator")]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName("orchestrator")]
            ),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate.public_bytes(serialization.Encoding.PEM),
    )
