"""Prometheus metrics, defined once per process (``/metrics`` exposes the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["RPC_SECONDS", "EXCHANGES", "NODES_BY_STATE", "INBOX_DELIVERED"]

RPC_SECONDS = Histogram(
    "federation_rpc_seconds",
    "Server-side gRPC call duration by component, method and status code.",
    ["component", "method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EXCHANGES = Counter(
    "federation_exchanges_total",
    "Cross-site calls made by the gateway, by operation, target site and outcome.",
    ["operation", "target_site", "outcome"],
)
NODES_BY_STATE = Gauge(
    "federation_nodes",
    "Registered node agents by state, as last seen by this gateway replica.",
    ["state"],
)
INBOX_DELIVERED = Counter(
    "federation_inbox_delivered_total",
    "Work items sent to node inbox streams, by kind.",
    ["kind"],
)
