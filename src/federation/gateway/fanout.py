"""One call to many sites, in parallel, with a deadline — the gateway's cross-site shape.

Every capability that asks several nodes something (patient search, quality reports,
later archive reads) goes through :func:`fan_out`: it picks the online targets, calls
each with the same deadline, writes one exchange-log row per call whatever the
outcome, and turns every failure into a named :class:`SiteIssue` so the caller always
learns which sites are missing and why — never a silent gap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from federation.errors import DeadlineExceeded, FederationError, InvalidInput, UnknownSite
from federation.rpc.metrics import EXCHANGES
from federation.store import ExchangeEntry, GatewayStore

__all__ = ["Requester", "SiteIssue", "FanOutResult", "fan_out"]

log = logging.getLogger("federation.gateway.fanout")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, as the exchange log records it."""

    kind: str  # node | operator | user | gateway
    id: str
    site: str | None = None
    #: purpose of use (HL7 v3 ActReason) when the caller stated one
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class SiteIssue:
    severity: str
    code: str  # FHIR issue-type code
    diagnostics: str
    site_id: str = ""


@dataclass(slots=True)
class FanOutResult(Generic[T]):
    correlation_id: str
    answers: dict[str, T] = field(default_factory=dict)
    elapsed_ms: dict[str, float] = field(default_factory=dict)
    issues: list[SiteIssue] = field(default_factory=list)


async def fan_out(
    store: GatewayStore,
    requester: Requester,
    operation: str,
    call: Callable[[str, str], Awaitable[T]],
    *,
    correlation_id: str,
    site_ids: list[str] | None = None,
    purpose: str | None = None,
    records: Callable[[T], int] = lambda _: 1,
) -> FanOutResult[T]:
    """Call ``call(site_id, endpoint)`` at every online site (or ``site_ids``).

    ``call`` enforces its own deadline (it raises DeadlineExceeded); ``records`` says
    how many records an answer carried, for the log.
    """
    result: FanOutResult[T] = FanOutResult(correlation_id)
    view = await asyncio.to_thread(store.consortium_view)
    known = {site.site_id: node for site, node in view}
    for wanted in site_ids or []:
        if wanted not in known:
            raise UnknownSite(f"site '{wanted}' is not a member of the consortium registry")
    targets = []
    for site_id in site_ids or sorted(known):
        node = known[site_id]
        if node is None or node.state != "online":
            state = "never registered" if node is None else node.state
            result.issues.append(SiteIssue(
                "warning", "transient", f"site {site_id} was not asked: its node is {state}",
                site_id))
            continue
        targets.append((site_id, node.endpoint))

    async def one(site_id: str, endpoint: str) -> ExchangeEntry:
        started = time.perf_counter()
        status, outcome, detail, count = "OK", "ok", "", 0
        try:
            answer = await call(site_id, endpoint)
            result.answers[site_id] = answer
            count = records(answer)
        except DeadlineExceeded as exc:
            status, outcome, detail = "DEADLINE_EXCEEDED", "timeout", exc.message
            result.issues.append(SiteIssue("warning", "timeout", exc.message, site_id))
        except FederationError as exc:
            status, outcome, detail = exc.code, "error", exc.message
            code = "invalid" if isinstance(exc, InvalidInput) else "exception"
            result.issues.append(SiteIssue("error", code, exc.message, site_id))
            log.warning("%s at %s failed: %s", operation, site_id, exc.message)
        elapsed = (time.perf_counter() - started) * 1000
        result.elapsed_ms[site_id] = elapsed
        EXCHANGES.labels(operation, site_id, outcome).inc()
        return ExchangeEntry(
            at=dt.datetime.now(dt.UTC), correlation_id=correlation_id,
            requester_kind=requester.kind, requester_id=requester.id,
            requester_site=requester.site, target_site=site_id, operation=operation,
            purpose=purpose, patient_ref=None, outcome=outcome, status_code=status,
            detail=detail[:500], records=count, duration_ms=elapsed,
        )

    entries = await asyncio.gather(*(one(s, e) for s, e in targets))
    await asyncio.to_thread(store.log_exchanges, entries)  # one transaction, one audit append
    result.issues.sort(key=lambda i: i.site_id)
    return result

