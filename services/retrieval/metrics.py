"""The retrieval service's Prometheus metrics (README: Observability)."""

from prometheus_client import Histogram

from services.mesh.metrics import Children

VECTOR_SEARCH_RESULTS = Histogram(
    "meta_agent_vector_search_results",
    "Documents a search returned (the seed's metric); tenants beyond METRICS_TENANT_LABELS "
    "share the label `_other`.",
    ["tenant_id"],
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 50),
)
vector_search_results = Children(VECTOR_SEARCH_RESULTS)
"""`VECTOR_SEARCH_RESULTS.labels`, children kept (one per search)."""
