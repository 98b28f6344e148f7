"""Prometheus gauges computed from the store at scrape time (multi-replica safe).

Counters and histograms (:mod:`federation.rpc.metrics`) count what *this* replica did;
the figures an operator alerts on — a node down, the archive behind a site's feed, work
piling up for a site, the EMPI review backlog — are the consortium's, so a
:class:`StoreCollector` reads them from the shared database on each scrape
(:func:`federation.store.ops_view.operations_snapshot`). Any replica answers the same.

``exported_metric_names()`` lists every series name the gateway can expose; the tests
check the Grafana dashboard and alert rules in ``deploy/observability`` against it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from federation.logs import describe_exception
from federation.rpc import metrics as rpc_metrics
from federation.store.ops_view import OpsSnapshot

__all__ = ["StoreCollector", "store_registry", "exported_metric_names"]

log = logging.getLogger("federation.gateway.metrics")

_SITE = ["site_id"]
#: name → (help, labels); every family the collector yields
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "federation_store_up": (
        "1 when this replica could read the operations figures from the store.", []),
    "federation_node_up": (
        "1 when the site's node agent is online, 0 when unreachable, offline or never "
        "registered (one series per member site).", ["site_id", "tier"]),
    "federation_node_heartbeat_age_seconds": (
        "Seconds since the site's node last sent a heartbeat (as flushed to the store).",
        _SITE),
    "federation_sync_behind_changes": (
        "Changes in the site's feed (at its last known head) the archive has not pulled.",
        _SITE),
    "federation_sync_lag_seconds": (
        "0 when the archive is caught up with the site's feed, else seconds since it last "
        "was.", _SITE),
    "federation_sync_last_pull_age_seconds": (
        "Seconds since the archive last pulled the site's change feed.", _SITE),
    "federation_inbox_pending_items": (
        "Work items queued for the site's node and not yet acknowledged (the outbox "
        "backlog).", _SITE),
    "federation_inbox_oldest_pending_seconds": (
        "Age of the oldest unacknowledged work item for the site (0 when none).", _SITE),
    "federation_empi_review_open": (
        "Record pairs waiting in the EMPI review queue.", []),
    "federation_empi_review_oldest_seconds": (
        "Age of the oldest open EMPI review item (0 when none).", []),
}


def _families() -> dict[str, GaugeMetricFamily]:
    return {name: GaugeMetricFamily(name, text, labels=labels)
            for name, (text, labels) in FAMILIES.items()}


class StoreCollector(Collector):
    """Yields :data:`FAMILIES` from a fresh snapshot on every collect()."""

    def __init__(self, snapshot: Callable[[], OpsSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        fams = _families()
        try:
            snap = self._snapshot()
        except Exception as exc:  # a scrape must say the store is down, not fail
            log.warning("operations metrics unavailable: %s", describe_exception(exc))
            fams["federation_store_up"].add_metric([], 0)
            yield fams["federation_store_up"]
            return
        fams["federation_store_up"].add_metric([], 1)
        for site in snap.sites:
            sid = [site.site_id]
            fams["federation_node_up"].add_metric(
                [site.site_id, site.tier], 1 if site.node_state == "online" else 0)
            fams["federation_inbox_pending_items"].add_metric(sid, site.inbox_pending)
            fams["federation_inbox_oldest_pending_seconds"].add_metric(sid, site.inbox_oldest_s)
            if site.heartbeat_age_s is not None:
                fams["federation_node_heartbeat_age_seconds"].add_metric(
                    sid, site.heartbeat_age_s)
            if site.sync_behind is not None:
                fams["federation_sync_behind_changes"].add_metric(sid, site.sync_behind)
                fams["federation_sync_lag_seconds"].add_metric(sid, site.sync_lag_s or 0.0)
            if site.last_pull_age_s is not None:
                fams["federation_sync_last_pull_age_seconds"].add_metric(
                    sid, site.last_pull_age_s)
        fams["federation_empi_review_open"].add_metric([], snap.review_open)
        fams["federation_empi_review_oldest_seconds"].add_metric([], snap.review_oldest_s)
        yield from fams.values()


def store_registry(snapshot: Callable[[], OpsSnapshot]) -> CollectorRegistry:
    """A registry of its own per gateway app, scraped next to the process-wide one."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(snapshot))
    return registry


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                              "_created"),
             "gauge": ("",), "summary": ("_sum", "_count", "_created")}


def exported_metric_names() -> set[str]:
    """Every sample name /metrics can carry (``_total``, ``_bucket`` … included)."""
    families: list[Metric] = []
    for name in rpc_metrics.__all__:
        families += getattr(rpc_metrics, name).describe()
    families += _families().values()
    return {f.name + suffix for f in families for suffix in _SUFFIXES[f.type]}
