"""The LLM service's Prometheus metrics (served on its metrics port; README: Observability).

Labels are bounded: deployment and model names come from configuration and reasons from a fixed
list. Tokens carry the tenant, as the seed's metric does, through `tenant_label` (the first
METRICS_TENANT_LABELS tenants by name, the rest as `_other`); exact usage per tenant and model
is in the limits store.
"""

from prometheus_client import Counter, Gauge

from services.mesh.metrics import Children

TOKENS = Counter(
    "meta_agent_llm_tokens_total",
    "Tokens used, from the API's usage.",
    ["tenant_id", "model", "kind"],
)
REQUESTS = Counter(
    "meta_agent_llm_requests_total",
    "Calls to a model deployment by outcome.",
    ["deployment", "outcome"],
)
tokens, requests = Children(TOKENS), Children(REQUESTS)
"""`TOKENS.labels` and `REQUESTS.labels`, children kept (several per answer)."""
DEGRADED = Counter(
    "meta_agent_llm_degraded_total",
    "Answers given by the offline responder or the response cache because no model could.",
    ["reason"],
)
CIRCUIT_OPEN = Gauge(
    "meta_agent_llm_circuit_open",
    "1 while a deployment's circuit breaker is open or half-open, else 0.",
    ["deployment"],
)
