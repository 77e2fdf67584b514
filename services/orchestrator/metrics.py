"""The orchestrator's Prometheus metrics."""

from prometheus_client import Counter

DEGRADED_TURNS = Counter(
    "meta_agent_degraded_turns_total",
    "Turns answered in degraded mode, by the dependency that was down.",
    ["dependency"],
)
