"""Federated patient search: one query fanned out to every reachable site, in parallel.

Each site's call is one cross-site exchange (see :mod:`federation.gateway.fanout`);
a site that fails, times out or returns bad FHIR becomes an issue in the answer
(OperationOutcome-style) instead of failing the whole search.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from federation.envelope import Envelope
from federation.errors import InvalidInput
from federation.gateway.fanout import Requester, SiteIssue, fan_out
from federation.gateway.node_clients import NodeClients, NodeSearchResult
from federation.nodes.model import PatientQuery
from federation.security.identity import PeerIdentity
from federation.store import GatewayStore

__all__ = ["FederatedSearch", "SearchOutcome", "SiteHits", "PURPOSES"]

OPERATION = "NodeAgent/SearchPatients"
#: HL7 v3 PurposeOfUse codes accepted for cross-site reads
PURPOSES = frozenset({"TREAT", "ETREAT", "HOPERAT", "PATRQT", "HRESCH", "HSYSADMIN", "HDIRECT"})


@dataclass(frozen=True, slots=True)
class SiteHits:
    site_id: str
    patients: list[Envelope]
    truncated: bool
    elapsed_ms: float


@dataclass(slots=True)
class SearchOutcome:
    correlation_id: str
    results: list[SiteHits] = field(default_factory=list)
    issues: list[SiteIssue] = field(default_factory=list)


class FederatedSearch:
    def __init__(self, store: GatewayStore, clients: NodeClients, *, default_deadline_ms: int) -> None:
        self._store = store
        self._clients = clients
        self._default_deadline_ms = default_deadline_ms

    async def search(
        self,
        requester: PeerIdentity,
        query: PatientQuery,
        *,
        site_ids: list[str] | None = None,
        purpose: str = "TREAT",
        deadline_ms: int = 0,
    ) -> SearchOutcome:
        if purpose not in PURPOSES:
            raise InvalidInput(f"purpose_of_use must be one of {', '.join(sorted(PURPOSES))}, "
                               f"got {purpose!r}")
        correlation_id = uuid.uuid4().hex
        timeout = (deadline_ms or self._default_deadline_ms) / 1000

        async def call(site_id: str, endpoint: str) -> NodeSearchResult:
            return await self._clients.search(site_id, endpoint, query, timeout=timeout,
                                              correlation_id=correlation_id, purpose=purpose)

        done = await fan_out(
            self._store, Requester(requester.role, requester.name, requester.site_id), OPERATION,
            call, correlation_id=correlation_id, site_ids=site_ids, purpose=purpose,
            records=lambda hits: len(hits.patients),
        )
        return SearchOutcome(
            correlation_id=correlation_id,
            results=[SiteHits(s, hits.patients, hits.truncated, done.elapsed_ms[s])
                     for s, hits in sorted(done.answers.items())],
            issues=done.issues,
        )
