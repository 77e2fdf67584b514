"""Orchestrator settings.

Hand-overs to human agents wait in a hand-over queue (`ORCHESTRATOR_HANDOFF_QUEUE`):

- `memory`: in the process that runs the outbox relay, fed by the in-process bus (the embedded
  profile). Only that replica serves WatchHandoffs / AckHandoff; a restart loses what waits.
- `context`: in the context service's durable queue. Every replica serves WatchHandoffs /
  AckHandoff from it, claiming for the agent's connection every
  `ORCHESTRATOR_HANDOFF_POLL_SECONDS`. It is fed by the in-process bus where the relay runs
  it, or, on Azure Service Bus, by the subscription `SERVICE_BUS_SUBSCRIPTION_HANDOFFS` of the
  actions topic, which every replica reads (competing consumers; a message is completed only
  once its hand-over is queued).
- `auto` (default): `context` when the action bus is Service Bus
  (`AZURE_SERVICE_BUS_CONNECTION_STRING` set), else `memory`. `memory` with Service Bus is
  refused: nothing would feed it.
"""

import socket
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.mesh.settings import MeshSettings
from services.orchestrator.bus import broker_connection

HandoffQueueKind = Literal["memory", "context"]


class OrchestratorSettings(MeshSettings):
    retrieval_top_k: int = Field(5, ge=1, le=50, validation_alias="RETRIEVAL_TOP_K")
    max_text_chars: int = Field(4000, ge=1, validation_alias="ORCHESTRATOR_MAX_TEXT_CHARS")
    handoff_resume_grace_seconds: float = Field(
        10.0, ge=0, validation_alias="ORCHESTRATOR_HANDOFF_RESUME_GRACE_SECONDS"
    )
    """How long a hand-over socket's unacknowledged events wait for its next watch (with the
    context queue: the lease of a connection's hand-overs, at least three polls)."""
    handoff_queue: Literal["auto", "memory", "context"] = Field(
        "auto", validation_alias="ORCHESTRATOR_HANDOFF_QUEUE"
    )
    """Where hand-overs wait for human agents (module docstring)."""
    handoff_poll_seconds: float = Field(
        1.0, gt=0, le=60, validation_alias="ORCHESTRATOR_HANDOFF_POLL_SECONDS"
    )
    """With the context queue: how often an open watch claims (and renews its leases)."""
    turn_lease_seconds: float = Field(
        30.0, gt=0, validation_alias="ORCHESTRATOR_TURN_LEASE_SECONDS"
    )
    """How long a turn's idempotency claim and session lease hold if the process dies."""
    lock_wait_seconds: float = Field(10.0, ge=0, validation_alias="ORCHESTRATOR_LOCK_WAIT_SECONDS")
    """How long a turn waits for the session's previous turn before ABORTED."""
    azure_service_bus_connection_string: SecretStr | None = Field(
        None, validation_alias="AZURE_SERVICE_BUS_CONNECTION_STRING"
    )
    """The action bus; none = the in-process bus of the embedded profile."""
    service_bus_topic_actions: str = Field(
        "meta-agent-actions", validation_alias="SERVICE_BUS_TOPIC_ACTIONS"
    )
    service_bus_subscription_handoffs: str = Field(
        "handoffs",
        min_length=1,
        max_length=50,
        validation_alias="SERVICE_BUS_SUBSCRIPTION_HANDOFFS",
    )
    """The subscription of the actions topic that feeds the context hand-over queue (its rule
    should let `action.handoff_human` and `action.create_ticket` through; no sessions)."""
    outbox_max_attempts: int = Field(20, ge=1, validation_alias="OUTBOX_MAX_ATTEMPTS")
    """Publish attempts before an action is dead-lettered (status failed)."""
    outbox_batch_size: int = Field(100, ge=1, le=500, validation_alias="OUTBOX_BATCH_SIZE")
    outbox_poll_seconds: float = Field(1.0, ge=0, validation_alias="OUTBOX_POLL_SECONDS")
    outbox_lease_seconds: int = Field(60, ge=1, le=3600, validation_alias="OUTBOX_LEASE_SECONDS")
    """How long a sweep holds the messages it claimed (replicas never share a message)."""
    outbox_relay_id: str = Field(
        default_factory=socket.gethostname, max_length=128, validation_alias="OUTBOX_RELAY_ID"
    )
    """The relay's claimant name: unique per replica, kept across restarts (the pod name)."""
    run_relay: bool = Field(True, validation_alias="ORCHESTRATOR_RUN_RELAY")
    """Run the outbox relay in this process (one replica should; see README: Actions)."""

    def service_bus_connection(self) -> str | None:
        """The Service Bus connection string, or None for the in-process bus."""
        return broker_connection(self.azure_service_bus_connection_string)

    def handoff_queue_kind(self) -> HandoffQueueKind:
        """The hand-over queue in use (`auto` resolved)."""
        if self.handoff_queue != "auto":
            return self.handoff_queue
        return "context" if self.service_bus_connection() else "memory"

    @model_validator(mode="after")
    def _handoffs_fed(self) -> "OrchestratorSettings":
        if self.handoff_queue == "memory" and self.service_bus_connection():
            raise ValueError(
                "ORCHESTRATOR_HANDOFF_QUEUE=memory cannot be fed from Service Bus: "
                "use context (or auto)"
            )
        return self
