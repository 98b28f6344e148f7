"""Calls the gateway refused (role not allowed, revoked certificate) are exchanges too.

The call guard refuses them before any servicer runs; :func:`refusal_logger` gives it a
hook that writes an exchange-log row with outcome ``refused`` — and so, in the same
transaction, an AuditEvent with outcome 4 — naming the caller by its certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable

import grpc

from federation.errors import FederationError
from federation.security.tls import peer_identity
from federation.store import ExchangeEntry, GatewayStore

__all__ = ["RefusalHook", "refusal_logger"]

log = logging.getLogger("federation.audit")

RefusalHook = Callable[[str, grpc.aio.ServicerContext, FederationError], Awaitable[None]]


def refusal_logger(store: GatewayStore) -> RefusalHook:
    async def refused(method: str, context: grpc.aio.ServicerContext,
                      exc: FederationError) -> None:
        try:
            peer = peer_identity(context)
        except FederationError:
            return  # no certificate at all: TLS refused it before this point
        operation = method.removeprefix("/federation.v1.")
        entry = ExchangeEntry(
            at=dt.datetime.now(dt.UTC), correlation_id=uuid.uuid4().hex,
            requester_kind=peer.role if peer.role in ("node", "operator", "gateway") else "user",
            requester_id=peer.name, requester_site=peer.site_id, target_site=None,
            operation=operation, purpose=None, patient_ref=None, outcome="refused",
            status_code=exc.code, detail=exc.message[:500])
        try:
            await asyncio.to_thread(store.log_exchange, entry)
        except FederationError as failure:
            log.warning("could not log a refused %s: %s", operation, failure.message)

    return refused
