"""The orchestrator's Prometheus metrics (README: Observability). Channels and dependencies
are enums, so every label here is bounded."""

from prometheus_client import Counter, Gauge

from services.mesh.metrics import Children

DEGRADED_TURNS = Counter(
    "meta_agent_degraded_turns_total",
    "Turns answered in degraded mode, by the dependency that was down.",
    ["dependency"],
)
DROPPED_ACTIONS = Counter(
    "meta_agent_dropped_actions_total",
    "Proposed actions dropped before publication, by reason.",
    ["reason"],
)
TURNS = Counter(
    "meta_agent_turns",
    "Turns answered (replays of a stored reply excluded), by channel and whether degraded.",
    ["channel", "degraded"],
)
answered_turns = Children(TURNS)
"""`TURNS.labels`, children kept (one per turn)."""
OUTBOX_BACKLOG = Gauge(
    "meta_agent_outbox_backlog",
    "Actions waiting to be published (every tenant's), as the relay's last sweep saw them.",
)
OUTBOX_OLDEST = Gauge(
    "meta_agent_outbox_oldest_seconds",
    "Age of the oldest action waiting to be published at the relay's last sweep (0: none).",
)
