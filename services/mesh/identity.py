"""Names of the mesh's components; each is the identity in its mTLS certificate."""

from collections.abc import Iterable
from typing import Final

CONTEXT: Final = "context"
RETRIEVAL: Final = "retrieval"
LLM: Final = "llm"
SPEECH: Final = "speech"
ORCHESTRATOR: Final = "orchestrator"
GATEWAY: Final = "gateway"
OPERATOR: Final = "operator"
"""The `metaagent` command's own identity: it may read health, nothing else."""

GRPC_SERVICES: Final = (CONTEXT, RETRIEVAL, LLM, SPEECH, ORCHESTRATOR)
"""Components that serve gRPC, in start-up order."""

ALL_IDENTITIES: Final = (*GRPC_SERVICES, GATEWAY, OPERATOR)

SPIFFE_TRUST_DOMAIN: Final = "metaagent.local"


def spiffe_id(identity: str) -> str:
    """The URI SAN that names `identity` in its certificate."""
    return f"spiffe://{SPIFFE_TRUST_DOMAIN}/{identity}"


def identity_from_spiffe(uri: str) -> str | None:
    """The identity a SPIFFE URI names, or None when it is not one of ours."""
    prefix = f"spiffe://{SPIFFE_TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        return None
    name = uri[len(prefix) :]
    return name if name in ALL_IDENTITIES else None


def identity_among(uris: Iterable[str]) -> str | None:
    """The one identity the SPIFFE URIs of a certificate name; None when they name none of ours
    or more than one."""
    identities = {identity_from_spiffe(uri) for uri in uris}
    identities.discard(None)
    return identities.pop() if len(identities) == 1 else None
