"""Delivery of inbound work items (referrals, consults, reports) to node inbox streams.

Items live in the store until the node acknowledges them, so delivery is at least
once and survives gateway restarts; the node's inbox deduplicates by item id. A
stream first sends what is pending, then waits for new items: woken at once when this
replica enqueued one, and by polling for items another replica enqueued.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from federation.errors import FederationError
from federation.rpc.metrics import INBOX_DELIVERED
from federation.store import GatewayStore, WorkItemRow

__all__ = ["Inbox"]

BATCH = 100
log = logging.getLogger("federation.gateway.inbox")
#: told of every acknowledgement (the acknowledged item), e.g. to close a referral's loop
AckListener = Callable[[WorkItemRow], Awaitable[object]]


class Inbox:
    def __init__(self, store: GatewayStore, *, poll_seconds: float) -> None:
        self._store = store
        self._poll = poll_seconds
        self._wakeups: dict[str, asyncio.Event] = {}
        self._ack_listeners: list[AckListener] = []

    def on_ack(self, listener: AckListener) -> None:
        """Call ``listener(item)`` after each acknowledgement is stored; its
        failure is logged and never fails the node's ack (the item is safe either way)."""
        self._ack_listeners.append(listener)

    async def enqueue(
        self, site_id: str, kind: str, payload: bytes, *, source_site: str | None = None,
        item_id: str | None = None, content_type: str = "application/fhir+json",
    ) -> WorkItemRow:
        row = await asyncio.to_thread(
            self._store.enqueue, site_id, kind, payload, content_type=content_type,
            source_site=source_site, item_id=item_id,
        )
        self._wake(site_id)
        return row

    async def ack(self, site_id: str, item_id: str) -> WorkItemRow:
        row = await asyncio.to_thread(self._store.ack, site_id, item_id, dt.datetime.now(dt.UTC))
        for listener in self._ack_listeners:
            try:
                await listener(row)
            except FederationError as exc:
                log.warning("after the ack of %s by %s: %s", item_id, site_id, exc.message)
        return row

    async def stream(self, site_id: str, after_seq: int) -> AsyncIterator[WorkItemRow]:
        """Yield the site's unacknowledged items with seq > ``after_seq``, forever."""
        cursor = after_seq
        wakeup = self._wakeups.setdefault(site_id, asyncio.Event())
        while True:
            wakeup.clear()
            items = await asyncio.to_thread(self._store.pending_for, site_id, cursor, BATCH)
            if items:
                await asyncio.to_thread(
                    self._store.mark_delivered, [i.item_id for i in items], dt.datetime.now(dt.UTC)
                )
                for item in items:
                    INBOX_DELIVERED.labels(item.kind).inc()
                    yield item
                    cursor = max(cursor, item.seq)
                if len(items) == BATCH:
                    continue
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=self._poll)
            except TimeoutError:
                pass

    def wake(self, site_id: str) -> None:
        """New items for ``site_id`` were committed (by anyone in this process): wake its
        stream now rather than at the next poll."""
        self._wake(site_id)

    def _wake(self, site_id: str) -> None:
        event = self._wakeups.get(site_id)
        if event is not None:
            event.set()
