"""The regional archive's replica of each site's resources, and the feed cursors.

:meth:`ArchiveStore.apply` stores one batch of a site's change feed and moves the site's
cursor in the same transaction, so a pull that breaks off resumes exactly where its last
stored batch ended. The upsert keeps a row's newest version: a replayed batch (same or
older sequence numbers of the same epoch) changes nothing. A batch from a new epoch (the
node lost its feed and started over) overwrites whatever it meets; rows the new epoch
never mentions are removed by :meth:`drop_other_epochs` once the site has caught up.

SQLite and PostgreSQL both run the same ``INSERT … ON CONFLICT DO UPDATE … WHERE``.

Every Patient in a batch is linked to a person by the EMPI in the same transaction
(:mod:`federation.identity.index`): a stored Patient is always a linked one. With the
EMPI's cipher configured, Patient bodies (resident ID, phone) are stored AES-GCM
encrypted (:mod:`federation.security.privacy`) and decrypted on read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, func, or_, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, delete, select

from federation.archive.dedup import identity_keys, keys_text
from federation.errors import ConfigError, UnknownSite
from federation.identity.index import IdentityIndex
from federation.identity.store import patient_fields
from federation.security.privacy import BYTES_MAGIC
from federation.store.database import keys_in_sql
from federation.store.gateway_store import StoreSessions
from federation.store.models import FeedCursor, Site, SiteResource, UtcDateTime

__all__ = ["ArchiveStore", "CursorRow", "StoredChange", "StoredResource", "SEALED_TYPES",
           "resource_aad"]

#: resource types whose stored bodies carry resident IDs and phones: encrypted at rest
SEALED_TYPES = frozenset({"Patient"})


@dataclass(frozen=True, slots=True)
class StoredChange:
    """One change as the archive stores it (already checked by the puller)."""

    resource_type: str
    resource_id: str
    seq: int
    deleted: bool
    patient_id: str | None
    body: bytes | None


@dataclass(frozen=True, slots=True)
class StoredResource:
    site_id: str
    resource_type: str
    resource_id: str
    seq: int
    patient_id: str | None
    body: bytes
    received_at: dt.datetime
    #: its dedup keys (:mod:`federation.archive.dedup`), None when not computed
    keys: frozenset[str] | None = None


def _keys(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(text.split("\n")) if text else frozenset()


def _stored_keys(c: StoredChange) -> str | None:
    if c.deleted or c.body is None:
        return None
    try:
        return keys_text(identity_keys(c.resource_type, orjson.loads(c.body)))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None  # not a JSON object: the reader computes (or fails) later


@dataclass(frozen=True, slots=True)
class CursorRow:
    site_id: str
    epoch: str
    after: int
    node_head: int
    pulls: int
    rejected: int
    last_pull_at: dt.datetime | None
    caught_up_at: dt.datetime | None

    @classmethod
    def of(cls, m: FeedCursor) -> CursorRow:
        return cls(m.site_id, m.epoch, m.after, m.node_head, m.pulls, m.rejected,
                   m.last_pull_at, m.caught_up_at)


class ArchiveStore(StoreSessions):
    """The replica; Patient changes are also linked by the EMPI (``identity``) in the
    transaction that stores them."""

    def __init__(self, engine: Engine, identity: IdentityIndex | None = None) -> None:
        super().__init__(engine)
        self.identity = identity if identity is not None else IdentityIndex()
        #: Patient bodies (identifiers, telecom) are encrypted at rest with the EMPI's cipher
        self.cipher = self.identity.cipher

    def _seal(self, site_id: str, c: StoredChange) -> bytes | None:
        if c.deleted or c.body is None:
            return None
        if self.cipher is not None and c.resource_type in SEALED_TYPES:
            return self.cipher.encrypt_bytes(c.body, resource_aad(site_id, c.resource_type,
                                                          c.resource_id))
        return c.body

    def _plain(self, site_id: str, resource_type: str, resource_id: str,
               stored: bytes | None) -> bytes:
        """A stored body as JSON: decrypted when it was sealed (every read path goes here)."""
        body = bytes(stored or b"")
        if body.startswith(BYTES_MAGIC):
            if self.cipher is None:
                raise ConfigError("the archive's Patient records are encrypted; configure the "
                                  "privacy key ring (privacy_keyring) to read them")
            body = self.cipher.decrypt_bytes(body, resource_aad(site_id, resource_type,
                                                                resource_id))
        return body

    def _open(self, m: SiteResource) -> StoredResource:
        return StoredResource(m.site_id, m.resource_type, m.resource_id, m.seq, m.patient_id,
                              self._plain(m.site_id, m.resource_type, m.resource_id, m.body),
                              m.received_at)

    # ------------------------------------------------------------------ cursors

    def cursor(self, site_id: str) -> CursorRow | None:
        with self._read() as s:
            row = s.get(FeedCursor, site_id)
            return CursorRow.of(row) if row is not None else None

    def cursors(self) -> list[CursorRow]:
        with self._read() as s:
            return [CursorRow.of(m) for m in s.exec(select(FeedCursor).order_by(
                col(FeedCursor.site_id)))]

    # ------------------------------------------------------------------ writing

    def apply(self, site_id: str, epoch: str, changes: Sequence[StoredChange], *,
              after: int, node_head: int, rejected: int, now: dt.datetime,
              caught_up: bool) -> int:
        """Store one batch and set the cursor to ``after``; returns rows written."""
        written = 0
        with self._write() as s:
            if s.get(Site, site_id) is None:
                raise UnknownSite(f"site '{site_id}' is not a member of the consortium")
            if changes:
                stmt = _insert(s, SiteResource)
                excluded = stmt.excluded
                stmt = stmt.on_conflict_do_update(
                    index_elements=["site_id", "resource_type", "resource_id"],
                    set_={"epoch": excluded.epoch, "seq": excluded.seq,
                          "deleted": excluded.deleted, "patient_id": excluded.patient_id,
                          "body": excluded.body, "received_at": excluded.received_at,
                          "dedup_keys": excluded.dedup_keys},
                    where=or_(col(SiteResource.epoch) != excluded.epoch,
                              col(SiteResource.seq) < excluded.seq))
                result = s.connection().execute(stmt, [
                    {"site_id": site_id, "resource_type": c.resource_type,
                     "resource_id": c.resource_id, "epoch": epoch, "seq": c.seq,
                     "deleted": c.deleted, "patient_id": c.patient_id,
                     "body": self._seal(site_id, c), "received_at": now,
                     "dedup_keys": _stored_keys(c)}
                    for c in changes])
                written = max(result.rowcount, 0)
                self._link_patients(s, site_id, changes)
            self._move_cursor(s, site_id, epoch, after, node_head, rejected, now, caught_up)
        return written

    def _link_patients(self, s: Session, site_id: str, changes: Sequence[StoredChange]) -> None:
        newest: dict[str, StoredChange] = {}
        for c in changes:
            if c.resource_type == "Patient":
                newest[c.resource_id] = c
        if not newest:
            return
        live = []
        for c in newest.values():
            if c.deleted or c.body is None:
                self.identity.retire(s, site_id, c.resource_id)
            else:
                fields, local = patient_fields(json.loads(c.body))
                live.append((c.resource_id, local, fields))
        if live:
            self.identity.link_many(s, site_id, live)

    @staticmethod
    def _move_cursor(s: Session, site_id: str, epoch: str, after: int, node_head: int,
                     rejected: int, now: dt.datetime, caught_up: bool) -> None:
        values = {"epoch": epoch, "after": after, "node_head": node_head,
                  "pulls": 0, "rejected": rejected, "last_pull_at": now,
                  "caught_up_at": now if caught_up else None}
        stmt = _insert(s, FeedCursor).values(site_id=site_id, **values)
        excluded = stmt.excluded
        # same epoch: only forward (two replicas pulling at once); new epoch: start over
        same = col(FeedCursor.epoch) == excluded.epoch
        stmt = stmt.on_conflict_do_update(
            index_elements=["site_id"],
            set_={"epoch": excluded.epoch,
                  "after": func.max(col(FeedCursor.after), excluded.after)
                  if s.get_bind().dialect.name == "sqlite"
                  else func.greatest(col(FeedCursor.after), excluded.after),
                  "node_head": excluded.node_head,
                  "rejected": FeedCursor.rejected + excluded.rejected,
                  "last_pull_at": excluded.last_pull_at,
                  "caught_up_at": func.coalesce(excluded.caught_up_at,
                                                col(FeedCursor.caught_up_at))},
            where=same)
        s.connection().execute(stmt)
        # a new epoch: the cursor restarts there, whatever the old one said
        s.connection().execute(
            update(FeedCursor).where(col(FeedCursor.site_id) == site_id,
                                     col(FeedCursor.epoch) != epoch)
            .values(epoch=epoch, after=after, node_head=node_head, rejected=rejected,
                    last_pull_at=now, caught_up_at=now if caught_up else None))

    def count_pull(self, site_id: str) -> None:
        """One more completed pull of the site's feed."""
        with self._write() as s:
            s.connection().execute(update(FeedCursor).where(col(FeedCursor.site_id) == site_id)
                                   .values(pulls=FeedCursor.pulls + 1))

    def drop_other_epochs(self, site_id: str, epoch: str) -> int:
        """Remove the site's rows that came from a feed epoch other than ``epoch``."""
        with self._write() as s:
            result = s.connection().execute(
                delete(SiteResource).where(col(SiteResource.site_id) == site_id,
                                           col(SiteResource.epoch) != epoch))
            return max(result.rowcount, 0)

    # ------------------------------------------------------------------ reading

    def counts(self, site_id: str | None = None) -> dict[str, dict[str, int]]:
        """{site: {resource type: live resources}}."""
        query = (select(SiteResource.site_id, SiteResource.resource_type, func.count())
                 .where(col(SiteResource.deleted).is_(False))
                 .group_by(col(SiteResource.site_id), col(SiteResource.resource_type)))
        if site_id is not None:
            query = query.where(col(SiteResource.site_id) == site_id)
        out: dict[str, dict[str, int]] = {}
        with self._read() as s:
            for site, rtype, n in s.exec(query):
                out.setdefault(site, {})[rtype] = int(n)
        return out

    def resources_of(self, site_id: str, patient_id: str) -> list[StoredResource]:
        """A site patient's live resources (the Patient itself included), oldest first."""
        return self.person_resources([(site_id, patient_id)])

    def person_resources(self, refs: Sequence[tuple[str, str]],
                         types: Sequence[str] | None = None) -> list[StoredResource]:
        """The live resources of several site patients (``(site, patient id)`` pairs, the
        Patients themselves included) in one query, by site then feed order."""
        if not refs:
            return []
        where, params = _about(refs, types)
        query = text("SELECT site_id, resource_type, resource_id, seq, patient_id, body, "
                     f"received_at, dedup_keys FROM site_resource WHERE {where} "
                     "ORDER BY site_id, seq").columns(received_at=UtcDateTime)
        with self._read() as s:
            return [StoredResource(site, rtype, rid, seq, pid,
                                   self._plain(site, rtype, rid, body), at, _keys(keys))
                    for site, rtype, rid, seq, pid, body, at, keys
                    in s.connection().execute(query, params)]

    def latest(self, refs: Sequence[tuple[str, str]], resource_type: str, limit: int
               ) -> list[StoredResource]:
        """The ``limit`` live resources of one type about these records that arrived last
        (newest feed versions first)."""
        if not refs:
            return []
        where, params = _about(refs, [resource_type])
        query = text("SELECT site_id, resource_type, resource_id, seq, patient_id, body, "
                     f"received_at FROM site_resource WHERE {where} "
                     "ORDER BY seq DESC LIMIT :limit").columns(received_at=UtcDateTime)
        with self._read() as s:
            return [StoredResource(site, rtype, rid, seq, pid,
                                   self._plain(site, rtype, rid, body), at)
                    for site, rtype, rid, seq, pid, body, at
                    in s.connection().execute(query, params | {"limit": limit})]

    def person_index(self, refs: Sequence[tuple[str, str]], types: Sequence[str] | None = None
                     ) -> list[tuple[str, str, str, frozenset[str] | None]]:
        """What :meth:`person_resources` finds, without bodies or times: (site, type, id,
        dedup keys) rows, for a caller that shows a page of a large record
        (:meth:`page_of` then reads that page). The cheap query a paged read runs on the
        whole record (a person may have thousands of resources)."""
        if not refs:
            return []
        where, params = _about(refs, types)
        query = text("SELECT site_id, resource_type, resource_id, dedup_keys FROM site_resource "
                     f"WHERE {where} ORDER BY site_id, seq")
        with self._read() as s:
            return [(site, rtype, rid, _keys(keys))
                    for site, rtype, rid, keys in s.connection().execute(query, params)]

    def person_stamp(self, refs: Sequence[tuple[str, str]], types: Sequence[str] | None = None
                     ) -> tuple[object, ...]:
        """What moves whenever any of these site patients' resources (of ``types``)
        changes: the count, the sum of feed sequence numbers and the latest arrival of
        their rows, deleted ones included (:mod:`federation.archive.index_cache`)."""
        if not refs:
            return (0, 0, None)
        where, params = _about(refs, types, live=False)
        query = text("SELECT count(*), coalesce(sum(seq), 0), max(received_at) "
                     f"FROM site_resource WHERE {where}")
        with self._read() as s:
            count, seqs, latest = s.connection().execute(query, params).one()
        return (int(count), int(seqs), latest)

    def page_of(self, keys: Sequence[tuple[str, str, str]]
                ) -> dict[tuple[str, str, str], tuple[bytes, dt.datetime]]:
        """The stored JSON and time received of (site, type, id) resources, in one query
        (one index search per site and type: :func:`~federation.store.database.keys_in_sql`)."""
        if not keys:
            return {}
        where, params = keys_in_sql(("site_id", "resource_type", "resource_id"), keys)
        query = text("SELECT site_id, resource_type, resource_id, body, received_at "
                     f"FROM site_resource WHERE {where}").columns(received_at=UtcDateTime)
        with self._read() as s:
            return {(site, rtype, rid): (self._plain(site, rtype, rid, body), at)
                    for site, rtype, rid, body, at in s.connection().execute(query, params)}

    def of_type(self, resource_type: str, site_id: str | None = None
                ) -> list[StoredResource]:
        """Every live resource of one type (optionally at one site): cohort selection."""
        query = select(SiteResource).where(col(SiteResource.resource_type) == resource_type,
                                           col(SiteResource.deleted).is_(False))
        if site_id is not None:
            query = query.where(col(SiteResource.site_id) == site_id)
        with self._read() as s:
            return [self._open(m) for m in s.exec(query)]

    def get(self, site_id: str, resource_type: str, resource_id: str) -> StoredResource | None:
        with self._read() as s:
            m = s.get(SiteResource, (site_id, resource_type, resource_id))
            if m is None or m.deleted:
                return None
            return self._open(m)


def _about(refs: Sequence[tuple[str, str]], types: Sequence[str] | None, *,
           live: bool = True) -> tuple[str, dict[str, Any]]:
    """SQL WHERE (and its parameters): the (``live``) resources about these (site,
    Patient id) records, of ``types``. Written as SQL text: a read builds it for each
    person, and SQLAlchemy's expression objects (and their cache keys) cost more than
    the query itself. Each record is asked for twice, by (site, patient) and by the
    Patient's own key: two index searches (``site = ? AND (patient = ? OR …)`` would
    search by site alone: every row of it)."""
    terms: list[str] = []
    params: dict[str, Any] = {}
    for n, (site, pid) in enumerate(refs):
        params[f"s{n}"], params[f"p{n}"] = site, pid
        terms.append(f"(site_id = :s{n} AND patient_id = :p{n})")
        terms.append(f"(site_id = :s{n} AND resource_type = 'Patient' AND resource_id = :p{n})")
    where = f"({' OR '.join(terms)})"
    if live:
        where += " AND deleted = :deleted"
        params["deleted"] = False
    if types is not None:
        params |= {f"t{n}": t for n, t in enumerate(types)}
        where += f" AND resource_type IN ({', '.join(f':t{n}' for n in range(len(types)))})"
    return where, params


def resource_aad(site_id: str, resource_type: str, resource_id: str) -> str:
    """Associated data binding an encrypted body to its row."""
    return f"site_resource/{site_id}/{resource_type}/{resource_id}"


def _insert(s: Session, model: type) -> sqlite.Insert | postgresql.Insert:
    dialect = s.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)
