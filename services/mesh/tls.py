"""mTLS credentials for one mesh identity, read from the certificate directory."""

from dataclasses import dataclass
from pathlib import Path

import grpc

from services.mesh.certs import CA_FILE


@dataclass(frozen=True)
class MeshTls:
    """The CA bundle plus this component's key and certificate."""

    identity: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, directory: Path, identity: str) -> "MeshTls":
        try:
            return cls(
                identity=identity,
                ca_pem=(directory / CA_FILE).read_bytes(),
                cert_pem=(directory / f"{identity}.pem").read_bytes(),
                key_pem=(directory / f"{identity}.key").read_bytes(),
            )
        except FileNotFoundError as missing:
            raise FileNotFoundError(
                f"mTLS material for '{identity}' is missing ({missing.filename}); "
                "run `metaagent certs` or point METAAGENT_CERTS_DIR at your certificates"
            ) from missing

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require a client certificate from the same CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials that present this identity and trust only the mesh CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )
