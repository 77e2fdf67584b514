"""The orchestrator's Prometheus metrics."""

from prometheus_client import Counter

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
