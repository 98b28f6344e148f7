"""Gather one person's record from every site, each in its archive mode.

* ``replicate`` sites: the archive's replica, one query for all of them; each resource's
  "last synced" is when the gateway stored that version (``received_at``);
* ``federate`` sites: ``NodeAgent.FetchPatientResourceBatches`` at each site, in parallel
  through :func:`federation.gateway.fanout.fan_out` (one exchange-log row per site), with
  one deadline; "last synced" is the moment it was fetched. A site that fails or does not
  answer in time becomes a named :class:`SiteIssue` — the caller turns it into an
  OperationOutcome warning entry, never a silent gap.

What the access decision withholds (consent) is dropped here, before anything else sees
it, and counted. The result is deduplicated (:mod:`federation.archive.dedup`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import orjson

from federation.archive.dedup import deduplicate, identity_keys
from federation.archive.index_cache import IndexCache, PersonIndex
from federation.archive.people import Person
from federation.archive.store import ArchiveStore
from federation.errors import DeadlineExceeded, InvalidInput
from federation.gateway.fanout import Requester, SiteIssue, fan_out
from federation.gateway.node_clients import NodeClients
from federation.store import GatewayStore

__all__ = ["FETCH_OPERATION", "PersonRecord", "RecordGatherer", "SourcedResource"]

FETCH_OPERATION = "NodeAgent/FetchPatientResources"


@dataclass(slots=True)
class SourcedResource:
    """One site's resource as gathered; its JSON is parsed only when someone looks
    (a page of a large record touches a few of thousands)."""

    site_id: str
    resource_type: str
    resource_id: str
    body: bytes
    synced_at: dt.datetime | None           # None until a lazily gathered item is filled
    stored_keys: frozenset[str] | None = None
    also_reported_by: list[str] = field(default_factory=list)
    _data: dict[str, Any] | None = None

    @classmethod
    def of(cls, site_id: str, resource_type: str, resource_id: str, data: dict[str, Any],
           synced_at: dt.datetime) -> SourcedResource:
        return cls(site_id, resource_type, resource_id, b"", synced_at, _data=data)

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = orjson.loads(self.body)
        return self._data

    @property
    def keys(self) -> frozenset[str]:
        if self.stored_keys is None:
            self.stored_keys = identity_keys(self.resource_type, self.data)
        return self.stored_keys


class IndexedResources(Sequence[SourcedResource]):
    """A deduplicated record index as resources, each made when first looked at (and
    then kept): a page of a record of thousands makes only that page's."""

    def __init__(self, index: PersonIndex) -> None:
        self._index = index
        self._made: dict[int, SourcedResource] = {}

    def __len__(self) -> int:
        return len(self._index.kept)

    @overload
    def __getitem__(self, i: int) -> SourcedResource: ...

    @overload
    def __getitem__(self, i: slice) -> list[SourcedResource]: ...

    def __getitem__(self, i: int | slice) -> SourcedResource | list[SourcedResource]:
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(len(self)))]
        return self._item(range(len(self))[i])

    def _item(self, position: int) -> SourcedResource:
        made = self._made.get(position)
        if made is None:
            row = self._index.kept[position]
            site, rtype, rid, keys = self._index.rows[row]
            made = self._made[position] = SourcedResource(
                site, rtype, rid, b"", None, keys, list(self._index.also.get(row, ())))
        return made


@dataclass(slots=True)
class PersonRecord:
    person: Person
    resources: Sequence[SourcedResource]
    issues: list[SiteIssue]
    withheld: int = 0                 # resources the patient's consent kept from the reader
    duplicates: int = 0


class RecordGatherer:
    def __init__(self, store: GatewayStore, archive: ArchiveStore, clients: NodeClients | None,
                 modes: dict[str, str], *, deadline_ms: int, validate: bool = True,
                 index_cache_rows: int = 30_000) -> None:
        self._store, self._archive, self._clients = store, archive, clients
        self._modes = modes
        self._deadline = deadline_ms / 1000
        self._validate = validate
        self._index = IndexCache(index_cache_rows)

    def mode(self, site_id: str) -> str:
        return self._modes.get(site_id, "replicate")

    async def gather(self, person: Person, *, permits: Callable[[str, str], bool],
                     requester: Requester, purpose: str, correlation_id: str,
                     types: set[str] | None = None, lazy: bool = False) -> PersonRecord:
        """``lazy``: replicated resources come without their JSON; :meth:`fill` the ones
        the caller will show (a page) before reading their ``data``."""
        started = time.monotonic()
        replicated = [r for r in person.records if self.mode(r[0]) == "replicate"]
        federated = [r for r in person.records if self.mode(r[0]) == "federate"]
        local = asyncio.to_thread(self._replica, replicated, types, not lazy)
        remote = self._federated(federated, types, requester, purpose, correlation_id, started)
        index, (fetched, issues) = await asyncio.gather(local, remote)
        if isinstance(index, PersonIndex):
            if not fetched and all(permits(*pair) for pair in index.pairs):
                # all shown, nothing fetched: the index's own deduplication stands
                return PersonRecord(person, IndexedResources(index), issues, 0,
                                    len(index.rows) - len(index.kept))
            rows = [SourcedResource(site, rtype, rid, b"", None, keys)
                    for site, rtype, rid, keys in index.rows]
        else:
            rows = index
        items: list[SourcedResource] = []
        withheld = 0
        for item in rows + fetched:
            if permits(item.site_id, item.resource_type):
                items.append(item)
            else:
                withheld += 1
        kept, also = deduplicate(items)
        out = []
        for i in kept:
            items[i].also_reported_by = also.get(i, [])
            out.append(items[i])
        return PersonRecord(person, out, issues, withheld, len(items) - len(kept))

    async def fill(self, items: list[SourcedResource]) -> None:
        """Load the JSON and time synced of lazily gathered items, in one query."""
        missing = [(i.site_id, i.resource_type, i.resource_id) for i in items
                   if i.synced_at is None]
        if not missing:
            return
        found = await asyncio.to_thread(self._archive.page_of, missing)
        for item in items:
            if item.synced_at is None:
                # a row removed since the index was read stays empty (not shown)
                item.body, item.synced_at = found.get(
                    (item.site_id, item.resource_type, item.resource_id),
                    (b"", dt.datetime.now(dt.UTC)))

    @staticmethod
    def shown(item: SourcedResource) -> bool:
        """Has the item a resource to show (not one removed before its page was read)?"""
        return bool(item.body) or item._data is not None

    def _replica(self, refs: list[tuple[str, str]], types: set[str] | None, bodies: bool
                 ) -> list[SourcedResource] | PersonIndex:
        """With ``bodies``, the resources; without, the record's index (kept between
        reads while unchanged: :mod:`federation.archive.index_cache`)."""
        wanted = sorted(types) if types else None
        if not bodies:
            return self._index.get(refs, wanted,
                                   lambda: self._archive.person_stamp(refs, wanted),
                                   lambda: self._archive.person_index(refs, wanted))
        return [SourcedResource(r.site_id, r.resource_type, r.resource_id, r.body,
                                r.received_at, r.keys)
                for r in self._archive.person_resources(refs, wanted)]

    async def _federated(self, refs: list[tuple[str, str]], types: set[str] | None,
                         requester: Requester, purpose: str, correlation_id: str,
                         started: float) -> tuple[list[SourcedResource], list[SiteIssue]]:
        if not refs:
            return [], []
        if self._clients is None:
            return [], [SiteIssue("warning", "not-supported", f"site {s} is federated but this "
                                  "gateway has no node clients", s) for s, _ in refs]
        by_site: dict[str, list[str]] = {}
        for site, pid in refs:
            by_site.setdefault(site, []).append(pid)
        wanted = sorted(types) if types else []

        async def call(site_id: str, endpoint: str) -> list[SourcedResource]:
            remaining = self._deadline - (time.monotonic() - started)
            if remaining <= 0:
                raise DeadlineExceeded(f"site {site_id} did not answer within the deadline")
            return await asyncio.wait_for(
                self._fetch_site(site_id, endpoint, by_site[site_id], wanted, correlation_id,
                                 purpose, remaining), remaining + 0.05)

        async def guarded(site_id: str, endpoint: str) -> list[SourcedResource]:
            try:
                return await call(site_id, endpoint)
            except TimeoutError:
                raise DeadlineExceeded(f"site {site_id} did not answer within the deadline "
                                       f"({self._deadline * 1000:.0f} ms)") from None

        result = await fan_out(self._store, requester, FETCH_OPERATION, guarded,
                               correlation_id=correlation_id, site_ids=sorted(by_site),
                               purpose=purpose, records=len)
        fetched = [item for site in sorted(result.answers) for item in result.answers[site]]
        issues = [SiteIssue(i.severity if i.severity != "error" else "warning", i.code,
                            f"records of site {i.site_id} are missing from this answer: "
                            f"{i.diagnostics}", i.site_id) for i in result.issues]
        return fetched, issues

    async def _fetch_site(self, site_id: str, endpoint: str, patient_ids: list[str],
                          types: list[str], correlation_id: str, purpose: str,
                          timeout: float) -> list[SourcedResource]:
        assert self._clients is not None
        now = dt.datetime.now(dt.UTC)
        out: list[SourcedResource] = []
        for pid in patient_ids:
            async for env in self._clients.fetch(
                    site_id, endpoint, pid, resource_types=types,
                    correlation_id=correlation_id, purpose=purpose, timeout=timeout,
                    validate=self._validate):
                out.append(SourcedResource.of(site_id, env.resource_type, env.id,
                                              _parsed(site_id, env.resource_type, env.id,
                                                      env.json), now))
        return out


def _parsed(site_id: str, resource_type: str, resource_id: str, body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("resourceType") != resource_type \
            or data.get("id") != resource_id:
        raise InvalidInput(f"site {site_id} sent {resource_type}/{resource_id} whose JSON "
                           "does not hold that resource")
    return data
