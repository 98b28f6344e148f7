"""The gateway store: registry, node liveness, exchange log and work items, over SQL.

Several gateway replicas may share one PostgreSQL database, so nothing here keeps state
in memory and every read-modify-write happens in one transaction on locked rows:

* per-site operations (registration, enqueueing) first lock the site's registry row
  (``FOR NO KEY UPDATE``, which foreign-key checks do not wait for). That serialises a
  node's concurrent registrations, and makes work-item ``seq`` values of one site commit
  in order — a delivery cursor that has passed seq *n* never misses a later-committing
  item with a smaller seq;
* node rows are locked ``FOR UPDATE`` before their state changes; the liveness sweep
  takes them ``SKIP LOCKED``, so sweepers on several replicas split the work and each
  transition (and its ``node_event``) is recorded exactly once;
* idempotent inserts use ``INSERT … ON CONFLICT DO NOTHING`` and then read the winner.

On SQLite every write transaction is ``BEGIN IMMEDIATE`` (see ``database.py``), which
serialises writers; row locks render as nothing there.

Methods are synchronous (the asyncio gateway calls them with ``asyncio.to_thread``) and
return the frozen rows from :mod:`federation.store.models`, never ORM objects.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, delete, func, insert, or_, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session, col, select

from federation.errors import Conflict, InvalidInput, NotFound, Unavailable, UnknownSite
from federation.store.audit_append import append_exchanges
from federation.store.database import check_connection, describe, failure_reason, read_only
from federation.store.models import (
    OUTCOMES,
    REQUESTER_KINDS,
    TIERS,
    WORK_KINDS,
    AccountRow,
    ExchangeEntry,
    ExchangeLog,
    GatewayAccount,
    Node,
    NodeEvent,
    NodeEventRow,
    NodeRow,
    Site,
    SiteRow,
    UsedAssertion,
    WorkItem,
    WorkItemRow,
)

__all__ = ["GatewayStore", "StoreSessions", "insert_work_item", "lock_sites"]


_node = Node.__table__.c
#: built once: compiling and cache-keying it per call cost more than running it
_HEARTBEAT = (
    update(Node.__table__)
    .where(_node.site_id == bindparam("site"), _node.state == "online")
    .values(
        heartbeat_seq=bindparam("seq"),
        last_heartbeat_at=case(
            (_node.last_heartbeat_at < bindparam("now", type_=_node.last_heartbeat_at.type),
             bindparam("now", type_=_node.last_heartbeat_at.type)),
            else_=_node.last_heartbeat_at),
    )
    .returning(*Node.__table__.columns)
)


_INSERT_EXCHANGES = insert(ExchangeLog.__table__)
_RETURNING_IDS = _INSERT_EXCHANGES.returning(ExchangeLog.__table__.c.id,
                                             sort_by_parameter_order=True)


def _insert_exchanges(conn: Connection, rows: list[dict[str, object]]) -> list[int]:
    """Insert exchange rows; their ids in order. PostgreSQL: batched ``RETURNING``.
    SQLite cannot order ``RETURNING`` of a multi-row insert (SQLAlchemy would send one
    statement per row), but its writer holds the database alone (``BEGIN IMMEDIATE``), so
    an ``executemany`` assigns consecutive rowids ending at ``last_insert_rowid()``."""
    if conn.dialect.name != "sqlite":
        return [int(i) for i in conn.execute(_RETURNING_IDS, rows).scalars()]
    # the DB-API's executemany with the columns' own bind processors: the Core insert's
    # per-row parameter handling was a fifth of an audited exchange's cost
    columns = tuple(rows[0])
    sql, convert = _sqlite_insert(conn.dialect, columns)
    conn.exec_driver_sql(sql, [
        tuple(row[name] if f is None else f(row[name]) for name, f in zip(columns, convert))
        for row in rows])
    last = int(conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one())
    return list(range(last - len(rows) + 1, last + 1))


@functools.cache
def _sqlite_insert(dialect: Dialect, columns: tuple[str, ...]
                   ) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]]:
    """The insert statement and each column's bind processor, built once per dialect
    (this runs for every exchange)."""
    table = ExchangeLog.__table__.c
    return (f"INSERT INTO exchange_log ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            tuple(table[name].type.dialect_impl(dialect).bind_processor(dialect)
                  for name in columns))


class StoreSessions:
    """Sessions on the gateway database: writes serialised per process on SQLite,
    connection failures raised as :class:`Unavailable`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        # SQLite allows one writer at a time; threads of this process queue on a lock
        # instead of hitting SQLITE_BUSY and sleeping in SQLite's busy handler (which
        # cut heartbeat throughput ~10x under 32 concurrent callers). One lock per
        # engine, shared by every store on it (the workflow's, the archive's, the
        # exchange log's …): with a lock each, their writers met in SQLite's busy handler,
        # which sleeps 1, 2, 5 … 100 ms between tries. Other processes on the same file
        # still rely on busy_timeout.
        self._write_lock: AbstractContextManager[object] = (
            _writer_lock(engine) if engine.dialect.name == "sqlite" else nullcontext())
        # group commit of the exchange log (log_exchanges): callers queue here, and one
        # of them at a time writes everything queued in one transaction
        self._log_queue: list[_LogRequest] = []
        self._log_queue_lock = threading.Lock()
        self._log_writer = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._write_lock, _translated(self._engine), Session(self._engine) as s, s.begin():
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with _translated(self._engine), Session(self._reader) as s, s.begin():
            yield s


_WRITER_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITER_LOCKS_GUARD = threading.Lock()


def _writer_lock(engine: Engine) -> threading.RLock:
    """The one lock this process's SQLite writers on ``engine`` queue on (re-entrant: a
    write that opened another store's write inside it fails in SQLite as it always did,
    it does not hang here)."""
    with _WRITER_LOCKS_GUARD:
        lock = _WRITER_LOCKS.get(engine)
        if lock is None:
            lock = _WRITER_LOCKS[engine] = threading.RLock()
        return lock


@dataclass(slots=True)
class _LogRequest:
    """One caller's exchange rows waiting for the group commit, and its answer."""

    rows: list[dict[str, Any]]
    ids: list[int] | None = None
    error: BaseException | None = None


class GatewayStore(StoreSessions):
    def ping(self) -> None:
        """Raise :class:`Unavailable` if the database cannot be reached."""
        check_connection(self._engine)

    def dispose(self) -> None:
        self._engine.dispose()

    # ------------------------------------------------------------------------- sites

    def upsert_site(
        self, site_id: str, name: str, tier: str, parent_site_id: str | None = None
    ) -> SiteRow:
        """Add a member site, or update its name, tier and parent."""
        _site_id(site_id)
        _choice("tier", tier, TIERS)
        with self._write() as s:
            if parent_site_id is not None:
                _check_parent(s, site_id, parent_site_id)
            values = {"name": name, "tier": tier, "parent_site_id": parent_site_id}
            s.exec(
                _insert(s, Site)
                .values(site_id=site_id, created_at=_now(), **values)
                .on_conflict_do_update(index_elements=["site_id"], set_=values)
            )
            return SiteRow.of(s.get_one(Site, site_id, populate_existing=True))

    def get_site(self, site_id: str) -> SiteRow | None:
        with self._read() as s:
            site = s.get(Site, site_id)
            return None if site is None else SiteRow.of(site)

    def require_site(self, site_id: str) -> SiteRow:
        site = self.get_site(site_id)
        if site is None:
            raise _unknown_site(site_id)
        return site

    def list_sites(self) -> list[SiteRow]:
        with self._read() as s:
            return [SiteRow.of(m) for m in s.exec(select(Site).order_by(col(Site.site_id)))]

    # ------------------------------------------------------------------------- nodes

    def register_node(
        self,
        site_id: str,
        *,
        endpoint: str,
        cert_serial: str,
        cert_fingerprint: str,
        software_version: str,
        capabilities: Sequence[str],
        now: dt.datetime,
    ) -> NodeRow:
        """(Re-)register the site's node: online from ``now``, registrations + 1.

        A node that comes with another certificate than last time (rotated, or reissued)
        has that change recorded as a node event of its own, naming both serials."""
        now = _utc("now", now)
        with self._write() as s:
            _lock_site(s, site_id)
            node = s.get(Node, site_id, with_for_update=True, populate_existing=True)
            if node is None:
                node = Node(site_id=site_id, state="online", state_changed_at=now,
                            registrations=0, registered_at=now, last_heartbeat_at=now)
                s.add(node)
                before = None
            else:
                before = node.state
                if node.cert_serial != cert_serial:  # a rotated (or reissued) certificate
                    _record(s, node, before, before, now,
                            f"certificate changed: serial {cert_serial} "
                            f"(was {node.cert_serial})")
            node.endpoint, node.cert_serial = endpoint, cert_serial
            node.cert_fingerprint, node.software_version = cert_fingerprint, software_version
            node.capabilities = json.dumps(list(capabilities), ensure_ascii=False)
            node.registrations += 1
            node.registered_at = node.last_heartbeat_at = now
            node.heartbeat_seq = 0
            reason = "registered" if before is None else f"re-registered (#{node.registrations})"
            _record(s, node, before, "online", now, reason)
            return NodeRow.of(node)

    def heartbeat(self, site_id: str, seq: int, now: dt.datetime) -> NodeRow:
        """Record a heartbeat; an unreachable node comes back online.

        NotFound if the node never registered, or is offline: either way it must
        (re-)register before its heartbeats count.
        """
        now = _utc("now", now)
        # hot path, every node every few seconds: an online node is one UPDATE statement
        # (the ORM round trip below costs ~10x more); transitions take the slow path
        with self._write_lock, _translated(self._engine), self._engine.begin() as conn:
            row = conn.execute(_HEARTBEAT, {"site": site_id, "seq": seq, "now": now}).first()
        if row is not None:
            return NodeRow.of(row)  # type: ignore[arg-type]  # a Row has the same attributes
        with self._write() as s:
            node = s.get(Node, site_id, with_for_update=True, populate_existing=True)
            if node is None or node.state == "offline":
                why = "has not registered" if node is None else "is offline"
                raise NotFound(f"node '{site_id}' {why}; it must register before heartbeats")
            node.heartbeat_seq = seq
            node.last_heartbeat_at = max(node.last_heartbeat_at, now)  # replicas race
            if node.state == "unreachable":
                _set_state(s, node, "online", now, "heartbeats resumed")
            return NodeRow.of(node)

    def record_heartbeats(self, beats: Mapping[str, tuple[int, dt.datetime]]) -> list[str]:
        """Record a batch of heartbeats (site → (seq, at)) of online nodes in one transaction.

        This is the registry's write-behind flush. Returns the sites that were not
        online; the caller takes each through :meth:`heartbeat`, which handles the
        transition back from unreachable and refuses unknown or offline nodes.
        """
        missed = []
        with self._write_lock, _translated(self._engine), self._engine.begin() as conn:
            for site_id, (seq, at) in sorted(beats.items()):  # one lock order for all replicas
                params = {"site": site_id, "seq": seq, "now": _utc("at", at)}
                if conn.execute(_HEARTBEAT, params).first() is None:
                    missed.append(site_id)
        return missed

    def mark_unreachable(self, cutoff: dt.datetime, now: dt.datetime) -> list[str]:
        """Every online node silent since before ``cutoff`` becomes unreachable.

        Returns the site ids this call moved. Nodes another replica's sweep (or a
        heartbeat) holds locked are skipped: that transaction decides them.
        """
        cutoff, now = _utc("cutoff", cutoff), _utc("now", now)
        with self._write() as s:
            stale = s.exec(
                select(Node)
                .where(Node.state == "online", col(Node.last_heartbeat_at) < cutoff)
                .order_by(col(Node.site_id))
                .with_for_update(skip_locked=True)
            ).all()
            for node in stale:
                last = node.last_heartbeat_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                _set_state(s, node, "unreachable", now, f"no heartbeat since {last}")
            return [node.site_id for node in stale]

    def mark_offline(self, site_id: str, now: dt.datetime, reason: str) -> NodeRow:
        """Take the node out of service (shut down, decommissioned) until it registers."""
        now = _utc("now", now)
        with self._write() as s:
            node = s.get(Node, site_id, with_for_update=True, populate_existing=True)
            if node is None:
                raise NotFound(f"site '{site_id}' has no registered node")
            if node.state != "offline":
                _set_state(s, node, "offline", now, reason)
            return NodeRow.of(node)

    def get_node(self, site_id: str) -> NodeRow | None:
        with self._read() as s:
            node = s.get(Node, site_id)
            return None if node is None else NodeRow.of(node)

    def list_nodes(self) -> list[NodeRow]:
        with self._read() as s:
            return [NodeRow.of(m) for m in s.exec(select(Node).order_by(col(Node.site_id)))]

    def consortium_view(self) -> list[tuple[SiteRow, NodeRow | None]]:
        """Every member site with its node (None if it never registered), by site id."""
        with self._read() as s:
            rows = s.exec(
                select(Site, Node)
                .join(Node, col(Node.site_id) == col(Site.site_id), isouter=True)
                .order_by(col(Site.site_id))
            )
            return [(SiteRow.of(site), None if node is None else NodeRow.of(node))
                    for site, node in rows]

    def node_events(self, site_id: str | None = None, limit: int = 100) -> list[NodeEventRow]:
        """Node state changes and registrations, newest first.

        Ordered by id, not ``at``: a node's events are written under its row lock, so ids
        follow the real order of transitions even when replicas' clocks disagree.
        """
        query = select(NodeEvent).order_by(col(NodeEvent.id).desc())
        if site_id is not None:
            query = query.where(NodeEvent.site_id == site_id)
        with self._read() as s:
            return [NodeEventRow.of(m) for m in s.exec(query.limit(limit))]

    # ------------------------------------------------------------------ exchange log

    def log_exchange(self, entry: ExchangeEntry) -> int:
        """Append one exchange to the log, and its AuditEvent to the audit trail in the
        same transaction; returns its id."""
        return self.log_exchanges([entry])[0]

    def log_exchanges(self, entries: Sequence[ExchangeEntry]) -> list[int]:
        """Append exchanges (and their AuditEvents) in one transaction; returns their ids
        once they are committed.

        Group commit: every cross-site call ends here (each page of the console makes
        several), so concurrent callers of this process share transactions — whoever
        gets the writer's lock writes every request queued by then, in queue order, as
        one transaction and one audit append (one lock of the audit head, one commit),
        and each caller returns when the transaction holding its rows has committed. If
        a shared transaction fails, each request is retried alone, so one caller's
        failure is never another's. Core statements, not the ORM."""
        rows = [_exchange_row(entry) for entry in entries]
        if not rows:
            return []
        request = _LogRequest(rows)
        with self._log_queue_lock:
            self._log_queue.append(request)
        while request.ids is None and request.error is None:
            with self._log_writer:
                if request.ids is not None or request.error is not None:
                    break                      # a writer before us took our rows along
                with self._log_queue_lock:
                    batch, self._log_queue = self._log_queue, []
                self._write_log(batch)
        if request.error is not None:
            raise request.error
        assert request.ids is not None
        return request.ids

    def _write_log(self, batch: list[_LogRequest]) -> None:
        try:
            ids = self._append_log([row for r in batch for row in r.rows])
        except Exception as exc:   # noqa: BLE001 - retried alone, each gets its own answer
            if len(batch) == 1:
                batch[0].error = exc
                return
            for request in batch:
                self._write_log([request])
            return
        for request in batch:
            request.ids, ids = ids[:len(request.rows)], ids[len(request.rows):]

    def _append_log(self, rows: list[dict[str, Any]]) -> list[int]:
        with self._write_lock, _translated(self._engine), self._engine.begin() as conn:
            ids = _insert_exchanges(conn, rows)
            append_exchanges(conn, [(ExchangeEntry(**row, id=i), i)
                                    for row, i in zip(rows, ids, strict=True)])
            return ids

    def list_exchanges(
        self, *, site: str | None = None, since: dt.datetime | None = None, limit: int = 100
    ) -> list[ExchangeEntry]:
        """Exchanges newest first; ``site`` matches the requesting or the target site."""
        query = select(ExchangeLog).order_by(col(ExchangeLog.at).desc(),
                                             col(ExchangeLog.id).desc())
        if site is not None:
            query = query.where(or_(ExchangeLog.requester_site == site,
                                    ExchangeLog.target_site == site))
        if since is not None:
            query = query.where(col(ExchangeLog.at) >= _utc("since", since))
        with self._read() as s:
            return [ExchangeEntry.of(m) for m in s.exec(query.limit(limit))]

    def exchange_counts(self) -> dict[str, int]:
        """How many exchanges ended in each outcome (every outcome present, maybe 0)."""
        with self._read() as s:
            rows = s.exec(select(ExchangeLog.outcome, func.count()).group_by(ExchangeLog.outcome))
            return {outcome: 0 for outcome in OUTCOMES} | {o: n for o, n in rows}

    # -------------------------------------------------------------------- assertions

    def consume_assertion(self, jti: str, site_id: str, expires_at: dt.datetime,
                          now: dt.datetime) -> None:
        """Record a staff assertion's one use (RFC 7523 §3); :class:`Conflict` when its
        ``jti`` was used before — by this replica or any other on the same database."""
        with self._write() as s:
            s.execute(delete(UsedAssertion).where(
                col(UsedAssertion.expires_at) < _utc("now", now)))
            inserted = s.execute(_insert(s, UsedAssertion).values(
                jti=jti[:64], site_id=site_id, expires_at=_utc("expires_at", expires_at))
                .on_conflict_do_nothing(index_elements=["jti"]))
            if inserted.rowcount != 1:
                raise Conflict("this staff assertion was already used; a site signs a new "
                               "one for every sign-in", code="assertion-replayed")

    # -------------------------------------------------------------------- accounts

    def put_account(self, user_id: str, roles: Iterable[str], password_hash: str,
                    now: dt.datetime, *, site_id: str | None = None) -> AccountRow:
        """Create an account or replace its roles, site and password. ``site_id``: the
        member site of a staff member's console account (it must be registered); None
        for a consortium account."""
        with self._write() as s:
            if site_id is not None and s.get(Site, site_id) is None:
                raise UnknownSite(f"site {site_id!r} is not a member of this consortium; "
                                  "register its node first")
            row = s.get(GatewayAccount, user_id) or GatewayAccount(
                user_id=user_id, roles="", password_hash="", created_at=_utc("now", now))
            row.roles, row.password_hash = " ".join(sorted(set(roles))), password_hash
            row.site_id = site_id
            row.disabled = False
            s.add(row)
            s.flush()
            return _account(row)

    def account(self, user_id: str) -> AccountRow | None:
        with self._read() as s:
            row = s.get(GatewayAccount, user_id)
            return _account(row) if row else None

    def list_accounts(self) -> list[AccountRow]:
        with self._read() as s:
            return [_account(r) for r in s.exec(select(GatewayAccount)
                                               .order_by(col(GatewayAccount.user_id)))]

    def disable_account(self, user_id: str) -> None:
        with self._write() as s:
            row = s.get(GatewayAccount, user_id)
            if row is None:
                raise NotFound(f"there is no consortium account '{user_id}'")
            row.disabled = True
            s.add(row)

    # -------------------------------------------------------------------- work items

    def enqueue(
        self,
        site_id: str,
        kind: str,
        payload: bytes,
        *,
        content_type: str = "application/fhir+json",
        source_site: str | None = None,
        item_id: str | None = None,
    ) -> WorkItemRow:
        """Queue an item for the site's node. Idempotent on ``item_id``: a repeat returns
        the first row; reusing an id for another site or kind is a Conflict."""
        with self._write() as s:
            return insert_work_item(s, site_id, kind, payload, content_type=content_type,
                                    source_site=source_site, item_id=item_id)

    def pending_for(self, site_id: str, after_seq: int = 0, limit: int = 100) -> list[WorkItemRow]:
        """The site's unacknowledged items with seq > ``after_seq``, in seq order."""
        query = (
            select(WorkItem)
            .where(WorkItem.site_id == site_id, col(WorkItem.seq) > after_seq,
                   col(WorkItem.acked_at).is_(None))
            .order_by(col(WorkItem.seq))
            .limit(limit)
        )
        with self._read() as s:
            return [WorkItemRow.of(m) for m in s.exec(query)]

    def mark_delivered(self, item_ids: Iterable[str], now: dt.datetime) -> int:
        """Note a delivery attempt (attempts + 1) of each unacknowledged item; returns count."""
        ids, now = list(item_ids), _utc("now", now)
        if not ids:
            return 0
        with self._write() as s:
            result = s.exec(
                update(WorkItem)
                .where(col(WorkItem.item_id).in_(ids), col(WorkItem.acked_at).is_(None))
                .values(attempts=WorkItem.attempts + 1, delivered_at=now)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount

    def ack(self, site_id: str, item_id: str, now: dt.datetime) -> WorkItemRow:
        """The site's node has the item. Repeats are harmless and keep the first acked_at."""
        now = _utc("now", now)
        mine = (WorkItem.item_id == item_id, WorkItem.site_id == site_id)
        with self._write() as s:
            s.exec(
                update(WorkItem)
                .where(*mine, col(WorkItem.acked_at).is_(None))
                .values(acked_at=now)
                .execution_options(synchronize_session=False)
            )
            item = s.exec(select(WorkItem).where(*mine)).first()
            if item is None:
                raise NotFound(f"site '{site_id}' has no work item '{item_id}'")
            return WorkItemRow.of(item)


# ---------------------------------------------------------------------------- helpers


def _account(row: GatewayAccount) -> AccountRow:
    return AccountRow(row.user_id, frozenset(row.roles.split()), row.password_hash,
                      row.created_at, row.disabled, row.site_id)


def insert_work_item(
    s: Session, site_id: str, kind: str, payload: bytes, *,
    content_type: str = "application/fhir+json", source_site: str | None = None,
    item_id: str | None = None,
) -> WorkItemRow:
    """Queue an item for the site's node inside the caller's transaction — the durable
    outbox of anything that must reach a node exactly when its own change commits.

    Locks the site's registry row first, so one site's ``seq`` values commit in order;
    a transaction queueing for several sites must call :func:`lock_sites` first (one lock
    order for every replica). Idempotent on ``item_id``; reusing an id for another site
    or kind is a Conflict."""
    _choice("kind", kind, WORK_KINDS)
    item_id = item_id or str(uuid.uuid4())
    values = dict(item_id=item_id, site_id=site_id, kind=kind, source_site=source_site,
                  created_at=_now(), content_type=content_type, payload=bytes(payload),
                  attempts=0)
    if s.get_bind().dialect.name == "postgresql":
        # The site lock is held to the commit, and every writer for this site queues on
        # it: take it, insert and read back in ONE round trip. (Four round trips here, each
        # waiting for a busy client process to be scheduled again, made the lock the
        # bottleneck of referral creation across replicas: bench/README.md.) Whatever the
        # caller has pending is written first, outside the lock.
        s.flush()
        inserted = s.execute(_LOCK_AND_INSERT, values).first()
        if inserted is not None:
            return WorkItemRow(**inserted._asdict())
        # nothing inserted: an unknown site, or the item exists (a retried move)
        if s.get(Site, site_id) is None:
            raise _unknown_site(site_id)
    else:
        _lock_site(s, site_id)
        s.exec(_insert(s, WorkItem).values(**values)
               .on_conflict_do_nothing(index_elements=["item_id"]))
    item = s.exec(select(WorkItem).where(WorkItem.item_id == item_id)).one()
    if (item.site_id, item.kind) != (site_id, kind):
        raise Conflict(f"work item '{item_id}' already exists as a {item.kind} for site "
                       f"'{item.site_id}'; use a new item id")
    return WorkItemRow.of(item)


def lock_sites(s: Session, site_ids: Iterable[str]) -> None:
    """Lock several sites' registry rows in one global order (sorted ids): replicas that
    queue for the same sites in one transaction then never deadlock. One site needs no
    order: :func:`insert_work_item` locks it, as late in the transaction as it can."""
    distinct = sorted(set(site_ids))
    if len(distinct) > 1:
        for site_id in distinct:
            _lock_site(s, site_id)


#: PostgreSQL: lock the site's row (as :func:`_lock_site`), queue the item, read it back
_WI = WorkItem.__table__.c
_LOCK_AND_INSERT = text(
    "WITH locked AS (SELECT site_id FROM site WHERE site_id = :site_id FOR NO KEY UPDATE) "
    "INSERT INTO work_item (item_id, site_id, kind, source_site, created_at, content_type, "
    "payload, attempts) SELECT :item_id, site_id, :kind, :source_site, :created_at, "
    ":content_type, :payload, :attempts FROM locked "
    "ON CONFLICT (item_id) DO NOTHING RETURNING seq, item_id, site_id, kind, source_site, "
    "created_at, content_type, payload, delivered_at, acked_at, attempts"
).bindparams(bindparam("created_at", type_=_WI.created_at.type),
             bindparam("payload", type_=_WI.payload.type)).columns(
    _WI.seq, _WI.item_id, _WI.site_id, _WI.kind, _WI.source_site, _WI.created_at,
    _WI.content_type, _WI.payload, _WI.delivered_at, _WI.acked_at, _WI.attempts)


@contextmanager
def _translated(engine: Engine) -> Iterator[None]:
    """Connection-level failures become Unavailable; everything else propagates."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise Unavailable(f"the gateway database ({describe(engine.url)}) failed: "
                          f"{failure_reason(exc, engine.url)}") from exc


def _exchange_row(entry: ExchangeEntry) -> dict[str, object]:
    _choice("requester_kind", entry.requester_kind, REQUESTER_KINDS)
    _choice("outcome", entry.outcome, OUTCOMES)
    return dict(
        at=_utc("at", entry.at), correlation_id=entry.correlation_id[:64],
        requester_kind=entry.requester_kind, requester_id=entry.requester_id[:200],
        requester_site=entry.requester_site, target_site=entry.target_site,
        operation=entry.operation[:128], purpose=entry.purpose, patient_ref=entry.patient_ref,
        outcome=entry.outcome, status_code=entry.status_code[:64],
        detail=entry.detail[:500], records=entry.records, duration_ms=entry.duration_ms,
    )


def _insert(s: Session, model: type) -> sqlite.Insert | postgresql.Insert:
    dialect = s.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def _lock_site(s: Session, site_id: str) -> Site:
    site = s.exec(
        select(Site).where(Site.site_id == site_id).with_for_update(key_share=True)
    ).first()
    if site is None:
        raise _unknown_site(site_id)
    return site


def _check_parent(s: Session, site_id: str, parent_site_id: str) -> None:
    seen, current = {site_id}, parent_site_id
    while current is not None:
        if current in seen:
            raise InvalidInput(f"site '{site_id}' cannot have '{parent_site_id}' as parent: "
                               "that would make a referral cycle")
        parent = s.get(Site, current)
        if parent is None:
            raise UnknownSite(f"parent site '{current}' of '{site_id}' is not a member of the "
                              "consortium registry; add the parent site first")
        seen.add(current)
        current = parent.parent_site_id


def _set_state(s: Session, node: Node, state: str, now: dt.datetime, reason: str) -> None:
    """Move the (locked) node to ``state`` and record the transition."""
    _record(s, node, node.state, state, now, reason)


def _record(
    s: Session, node: Node, before: str | None, state: str, now: dt.datetime, reason: str
) -> None:
    s.add(NodeEvent(site_id=node.site_id, at=now, from_state=before, to_state=state,
                    reason=reason[:200]))
    if before != state:
        node.state, node.state_changed_at = state, now


def _unknown_site(site_id: str) -> UnknownSite:
    return UnknownSite(f"site '{site_id}' is not a member of the consortium registry; "
                       "add it with `federation site add`")


def _site_id(site_id: str) -> None:
    if not site_id or len(site_id) > 64:
        raise InvalidInput(f"site id must be 1–64 characters, got {site_id!r}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _utc(name: str, value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime, got a naive one")
    return value.astimezone(dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
