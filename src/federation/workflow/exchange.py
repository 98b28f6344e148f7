"""Every workflow call is one exchange-log row (and so one AuditEvent): who did what to
which task, between which sites, about which patient — as a hash, never in clear.

One helper for every workflow (referral, consult); the store's
:meth:`~federation.store.GatewayStore.log_exchange` is the only writer of the log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid

from federation.archive.read import patient_ref as patient_hash
from federation.errors import FederationError
from federation.security.principal import Principal
from federation.store import ExchangeEntry, GatewayStore

__all__ = ["log_call"]

log = logging.getLogger("federation.workflow")


async def log_call(store: GatewayStore, who: Principal, operation: str, *, now: dt.datetime,
                   started: float, target: str | None, outcome: str, code: str,
                   purpose: str = "TREAT", detail: str = "", task_id: str | None = None,
                   patient: tuple[str, str] | None = None, records: int = 0) -> None:
    """Append the row; ``patient`` is (site, Patient id) and is logged as a hash. A failing
    log is a warning: it must not undo a move that was stored."""
    kind = {"person": "user", "node": "node", "operator": "operator"}.get(who.kind, "gateway")
    entry = ExchangeEntry(
        at=now, correlation_id=task_id or uuid.uuid4().hex, requester_kind=kind,
        requester_id=who.actor_id, requester_site=who.site_id, target_site=target,
        operation=operation, purpose=purpose,
        patient_ref=patient_hash(*patient) if patient else None, outcome=outcome,
        status_code=code, detail=detail[:500], records=records,
        duration_ms=(time.perf_counter() - started) * 1000)
    try:
        await asyncio.to_thread(store.log_exchange, entry)
    except FederationError as exc:
        log.warning("exchange log of %s failed: %s", operation, exc.message)
