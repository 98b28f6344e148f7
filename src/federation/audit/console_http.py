"""The audit console's JSON API (auditors and regional administrators; errors as FHIR
OperationOutcome). Each call is one exchange-log row itself.

* ``GET /api/audit/events?who=&patient=&site=&purpose=&operation=&outcome=&since=&until=
  &_count=&_offset=`` → ``{total, offset, count, since, until, events: [{id, at,
  correlation_id, requester: {kind, id, site}, target_site, operation, purpose, outcome,
  status, patient_ref, records, duration_ms, detail, leaf}]}``, newest first.
  ``who``: a requester id (``wang.li``, a node's ``county-a``) or ``kind:id`` as the
  anomalies name them (``user:wang.li``); ``patient``: an EMPI person id (found under
  every hash the log keeps for them, :func:`federation.audit.search.patient_refs`) or
  one 32-hex ``patient_ref``; ``site``: requesting or target site; ``operation``: exact,
  or a prefix ending in ``*``; ``outcome``: ok, error, timeout, refused. ``since`` /
  ``until`` (exclusive): a local day ``YYYY-MM-DD`` (UTC+8) or a zoned ISO 8601 instant;
  the default is the 7 days up to now, at most 366 days at once. ``leaf`` is the
  AuditEvent's index in the Merkle log (``GET /fhir/AuditEvent/{leaf}``, its proof at
  ``/api/audit/proof/{leaf}``), null for exchanges before the trail began.
* ``GET /api/audit/anomalies?since=&until=`` → ``{since, until, anomalies: [{rule,
  requester | requester_site, day | night, why, …}], rules}`` — the report's anomaly
  rules (:mod:`federation.audit.reports`), same window rules as ``/api/audit/report``.
* ``POST /api/audit/verify`` → ``{ok, entries, tree_size, root, first_bad_entry: {kind,
  leaf, exchange_id, message} | null, findings, message, verified_at, verified_by,
  duration_ms}``: the whole log recomputed now (seconds for a big log), the result
  kept in the store; ``GET /api/audit/verify`` → the last result any replica recorded
  (404 before the first).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from federation.audit.http import report_window
from federation.audit.log import AuditLog
from federation.audit.reports import CST, Rules, find_anomalies
from federation.audit.search import EventQuery, EventRow, ExchangeSearch, patient_refs
from federation.audit.verifications import Verifications, run_verification
from federation.errors import InvalidInput, NotFound
from federation.gateway.auth_api import claims_of, requester_of
from federation.gateway.params import instant, int_param, query
from federation.identity.lookup import logged, person_ref
from federation.identity.store import IdentityStore
from federation.security.tokens import PURPOSES
from federation.store import GatewayStore
from federation.store.models import OUTCOMES, REQUESTER_KINDS

__all__ = ["create_audit_console_router"]

MAX_COUNT = 200
DEFAULT_DAYS = 7
EVENT_PARAMETERS = ("who", "patient", "site", "purpose", "operation", "outcome", "since",
                    "until", "_count", "_offset")
_HASH = re.compile(r"^[0-9a-f]{32}$")


def _event_json(r: EventRow) -> dict[str, Any]:
    e = r.entry
    return {"id": e.id, "at": e.at.isoformat(), "correlation_id": e.correlation_id,
            "requester": {"kind": e.requester_kind, "id": e.requester_id,
                          "site": e.requester_site},
            "target_site": e.target_site, "operation": e.operation, "purpose": e.purpose,
            "outcome": e.outcome, "status": e.status_code, "patient_ref": e.patient_ref,
            "records": e.records, "duration_ms": round(e.duration_ms, 1), "detail": e.detail,
            "leaf": r.leaf}


def _who(raw: str | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    kind, sep, rest = raw.partition(":")
    if sep and kind in REQUESTER_KINDS and rest:
        return kind, rest
    return None, raw


def _choice(raw: str | None, name: str, allowed: tuple[str, ...] | list[str]) -> str | None:
    if raw is not None and raw not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, not '{raw[:40]}'")
    return raw


def _window(q: dict[str, str], now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    until = instant(q["until"], "until", CST) if "until" in q else now
    since = (instant(q["since"], "since", CST) if "since" in q
             else until - dt.timedelta(days=DEFAULT_DAYS))
    return since, until


def create_audit_console_router(store: GatewayStore, log: AuditLog, identity: IdentityStore,
                                ca_pem: Callable[[], bytes]) -> APIRouter:
    """``ca_pem`` gives the consortium CA the signed tree heads are checked against (read
    when a verification runs, so a rotated CA file is followed)."""
    router = APIRouter()
    search = ExchangeSearch(store.engine)
    verifications = Verifications(store.engine)

    @router.get("/api/audit/events")
    async def events(request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Audit/SearchEvents") as note:
            q = query(request, EVENT_PARAMETERS)
            count = int_param(q.get("_count"), "_count", 50, 1, MAX_COUNT)
            offset = int_param(q.get("_offset"), "_offset", 0, 0, 10**9)
            since, until = _window(q, dt.datetime.now(dt.UTC))
            kind, who = _who(q.get("who"))
            refs = None
            if "patient" in q:
                patient = q["patient"]
                if _HASH.match(patient):
                    refs = frozenset({patient})
                    note.patient_ref = patient
                else:
                    refs = await asyncio.to_thread(patient_refs, identity, patient)
                    note.patient_ref = person_ref(patient)
            where = EventQuery(
                since=since, until=until, requester_kind=kind, requester_id=who,
                site=q.get("site"), patient_refs=refs,
                purpose=_choice(q.get("purpose"), "purpose", list(PURPOSES)),
                operation=q.get("operation"),
                outcome=_choice(q.get("outcome"), "outcome", OUTCOMES))
            rows, total = await asyncio.to_thread(search.search, where, offset=offset,
                                                  limit=count)
            note.records = len(rows)
            return {"total": total, "offset": offset, "count": count,
                    "since": since.isoformat(), "until": until.isoformat(),
                    "events": [_event_json(r) for r in rows]}

    @router.get("/api/audit/anomalies")
    async def anomalies(request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Audit/GetAnomalies") as note:
            q = query(request, ("since", "until"))
            start, end = report_window(q.get("since"), q.get("until"))
            rows = await asyncio.to_thread(log.exchanges, start, end)
            rules = Rules()
            found = find_anomalies(rows, since=start, until=end, rules=rules)
            note.records = len(found)
            return {"since": start.isoformat(), "until": end.isoformat(), "anomalies": found,
                    "rules": {k: getattr(rules, k) for k in rules.__slots__}}

    @router.get("/api/audit/verify")
    async def last_verification(request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Audit/GetVerification") as note:
            query(request, ())
            latest = await asyncio.to_thread(verifications.latest)
            if latest is None:
                raise NotFound("the audit log has not been verified yet; verify it now with "
                               "POST /api/audit/verify")
            note.records = 1
            return latest.as_json()

    @router.post("/api/audit/verify")
    async def verify_now(request: Request) -> dict[str, Any]:
        claims = claims_of(request)
        async with logged(store, requester_of(request), "Audit/Verify") as note:
            query(request, ())
            result = await asyncio.to_thread(run_verification, store.engine, ca_pem(),
                                             by=f"{claims.site_id}/{claims.user_id}")
            await asyncio.to_thread(verifications.record, result)
            note.records = result.entries
            note.detail = "ok" if result.ok else (
                f"tampered: {result.findings} finding(s), first bad leaf "
                f"{(result.first_bad_entry or {}).get('leaf')}")
            return result.as_json()

    return router
