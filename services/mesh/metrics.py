"""Prometheus metrics every component shares: gRPC server and client calls, the gateway's HTTP
requests, and the bounded tenant label (README: Observability).

Each service process serves its registry on its own port (`METRICS_PORT`, see `serve_metrics`);
the gateway serves it at `/metrics`. Label values are bounded: methods, routes and codes come
from the code; tenants only through `tenant_label`, which names the first
`METRICS_TENANT_LABELS` tenants a process sees and folds the rest into `_other`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

log = logging.getLogger("metaagent.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
OTHER_TENANTS = "_other"
NO_TENANT = "_none"

REQUEST_DURATION = Histogram(
    "meta_agent_request_duration_seconds",
    "Duration of the gateway's HTTP requests (the seed's metric).",
    ["method", "route", "status_code", "tenant_id"],
    buckets=LATENCY_BUCKETS,
)
GRPC_SERVER_HANDLED = Counter(
    "meta_agent_grpc_server_handled",
    "RPCs this server completed, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SERVER_SECONDS = Histogram(
    "meta_agent_grpc_server_handling_seconds",
    "Time this server took to complete an RPC.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
GRPC_CLIENT_HANDLED = Counter(
    "meta_agent_grpc_client_handled",
    "RPCs this component made to another, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_CLIENT_SECONDS = Histogram(
    "meta_agent_grpc_client_handling_seconds",
    "Time an RPC this component made took, as seen by the caller.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "meta_agent_rate_limited",
    "Requests or model calls refused by a rate limit or budget, by scope.",
    ["scope"],
)


class TenantLabels:
    """The tenant label values of one process: the first `limit` tenants seen keep their id,
    later ones share `_other`, so a noisy or hostile tenant count cannot explode the series."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self._named: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, tenant_id: str) -> str:
        if not tenant_id:
            return NO_TENANT
        if tenant_id in self._named:
            return tenant_id
        with self._lock:
            if len(self._named) < self.limit:
                self._named.add(tenant_id)
                return tenant_id
        return OTHER_TENANTS


tenant_label = TenantLabels()


class Children:
    """`metric.labels(*values)`, keeping each child by its label values: `labels` converts and
    checks its arguments and takes the metric's lock on every call, and the per-turn paths ask
    for the same few children again and again. Label values are bounded (see the module
    docstring), and so is this."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


request_duration = Children(REQUEST_DURATION)
"""`REQUEST_DURATION.labels`, children kept."""


def split_method(method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` as (`pkg.Service`, `Method`)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service or "unknown", name or "unknown"


@dataclass
class RpcMeter:
    """One method's series, bound once: observing a call is a dict lookup and two updates."""

    seconds: Any
    handled: Any
    labels: tuple[str, str]
    _by_code: dict[grpc.StatusCode, Any]

    @classmethod
    def server(cls, method: str) -> RpcMeter:
        labels = split_method(method)
        return cls(GRPC_SERVER_SECONDS.labels(*labels), GRPC_SERVER_HANDLED, labels, {})

    @classmethod
    def client(cls, method: str) -> RpcMeter:
        labels = split_method(method)
        return cls(GRPC_CLIENT_SECONDS.labels(*labels), GRPC_CLIENT_HANDLED, labels, {})

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._by_code[code] = self.handled.labels(*self.labels, code.name)
        counter.inc()
        self.seconds.observe(seconds)


def serve_metrics(port: int, host: str = "0.0.0.0") -> Callable[[], None]:
    """Serve the process's registry at http://host:port/metrics on a thread of its own;
    returns the function that stops it."""
    server, thread = start_http_server(port, host, REGISTRY)
    log.info("metrics on %s:%s/metrics", host, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)

    return stop
