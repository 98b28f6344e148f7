"""Federated patient search: one query fanned out to every reachable site, in parallel.

Each site's call is one cross-site exchange and gets one row in the exchange log,
whatever its outcome. A site that fails, times out or returns bad FHIR becomes an
issue in the answer (OperationOutcome-style) instead of failing the whole search:
the caller always learns which sites are missing and why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

from federation.envelope import Envelope
from federation.errors import DeadlineExceeded, FederationError, InvalidInput, UnknownSite
from federation.gateway.node_clients import NodeClients
from federation.nodes.model import PatientQuery
from federation.rpc.metrics import EXCHANGES
from federation.security.identity import PeerIdentity
from federation.store import ExchangeEntry, GatewayStore

__all__ = ["FederatedSearch", "SearchOutcome", "SiteHits", "SearchIssue", "PURPOSES"]

log = logging.getLogger("federation.gateway.search")

OPERATION = "NodeAgent/SearchPatients"
#: HL7 v3 PurposeOfUse codes accepted for cross-site reads
PURPOSES = frozenset({"TREAT", "ETREAT", "HOPERAT", "PATRQT", "HRESCH", "HSYSADMIN", "HDIRECT"})


@dataclass(frozen=True, slots=True)
class SiteHits:
    site_id: str
    patients: list[Envelope]
    truncated: bool
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class SearchIssue:
    severity: str
    code: str
    diagnostics: str
    site_id: str = ""


@dataclass(slots=True)
class SearchOutcome:
    correlation_id: str
    results: list[SiteHits] = field(default_factory=list)
    issues: list[SearchIssue] = field(default_factory=list)


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
        outcome = SearchOutcome(correlation_id=uuid.uuid4().hex)
        view = await asyncio.to_thread(self._store.consortium_view)
        known = {site.site_id: node for site, node in view}
        for wanted in site_ids or []:
            if wanted not in known:
                raise UnknownSite(f"site '{wanted}' is not a member of the consortium registry")
        targets = []
        for site_id in site_ids or sorted(known):
            node = known[site_id]
            if node is None or node.state != "online":
                state = "never registered" if node is None else node.state
                outcome.issues.append(SearchIssue(
                    "warning", "transient", f"site {site_id} was not searched: its node is {state}",
                    site_id))
                continue
            targets.append((site_id, node.endpoint))
        timeout = (deadline_ms or self._default_deadline_ms) / 1000
        calls = [self._one(requester, t, query, purpose, timeout, outcome) for t in targets]
        entries = await asyncio.gather(*calls)
        await asyncio.to_thread(self._log_all, entries)
        outcome.results.sort(key=lambda r: r.site_id)
        return outcome

    async def _one(
        self,
        requester: PeerIdentity,
        target: tuple[str, str],
        query: PatientQuery,
        purpose: str,
        timeout: float,
        outcome: SearchOutcome,
    ) -> ExchangeEntry:
        site_id, endpoint = target
        started = time.perf_counter()
        status, result_code, detail, records = "OK", "ok", "", 0
        try:
            hits = await self._clients.search(
                site_id, endpoint, query, correlation_id=outcome.correlation_id,
                purpose=purpose, timeout=timeout,
            )
            records = len(hits.patients)
            outcome.results.append(SiteHits(site_id, hits.patients, hits.truncated,
                                            (time.perf_counter() - started) * 1000))
        except DeadlineExceeded as exc:
            status, result_code, detail = "DEADLINE_EXCEEDED", "timeout", exc.message
            outcome.issues.append(SearchIssue("warning", "timeout", exc.message, site_id))
        except FederationError as exc:
            status, result_code, detail = exc.code, "error", exc.message
            issue_code = "invalid" if isinstance(exc, InvalidInput) else "exception"
            outcome.issues.append(SearchIssue("error", issue_code, exc.message, site_id))
            log.warning("search at %s failed: %s", site_id, exc.message)
        elapsed = (time.perf_counter() - started) * 1000
        EXCHANGES.labels(OPERATION, site_id, result_code).inc()
        return ExchangeEntry(
            at=dt.datetime.now(dt.UTC),
            correlation_id=outcome.correlation_id,
            requester_kind=requester.role,
            requester_id=requester.name,
            requester_site=requester.site_id,
            target_site=site_id,
            operation=OPERATION,
            purpose=purpose,
            patient_ref=None,
            outcome=result_code,
            status_code=status,
            detail=detail[:500],
            records=records,
            duration_ms=elapsed,
        )

    def _log_all(self, entries: list[ExchangeEntry]) -> None:
        for entry in entries:
            self._store.log_exchange(entry)
