"""The gateway's own store: consortium registry, node liveness, exchange log, work items.

SQLite is the embedded default and PostgreSQL the shared store of several gateway
replicas; both are migrated by the packaged Alembic scripts (:func:`upgrade`). The same
database holds the regional archive's replica of the sites' FHIR resources
(``site_resource``, ``feed_cursor``; :mod:`federation.archive`), filled only from the
nodes' change feeds.
"""

from federation.store.database import (
                                       check_connection,
                                       current_revision,
                                       head_revision,
                                       make_engine,
                                       upgrade,
)
from federation.store.gateway_store import GatewayStore
from federation.store.models import ExchangeEntry, NodeEventRow, NodeRow, SiteRow, WorkItemRow

__all__ = [
    "GatewayStore",
    "SiteRow",
    "NodeRow",
    "NodeEventRow",
    "ExchangeEntry",
    "WorkItemRow",
    "make_engine",
    "upgrade",
    "current_revision",
    "head_revision",
    "check_connection",
]
