"""The node's change feed: every mapped resource, versioned by a monotonic cursor.

A scan maps the whole source (:meth:`NodeService.scan`) and hands the resources to
:meth:`ChangeFeed.apply_scan`, which compares each with the version it holds (a BLAKE2b
digest of its JSON) and gives what is new or changed the next sequence number; a
resource the source no longer has becomes a tombstone with a sequence number of its own.
The gateway asks for everything after its cursor (:meth:`changes`) and stores it, so:

* the first pull is the full history and later pulls are increments;
* replaying a cursor gives the same versions again (the gateway's upsert ignores what it
  has), so a pull that broke off is simply resumed from the last stored cursor;
* the feed lives in ``<state_dir>/feed.sqlite``: a restarted node rescans, finds nothing
  changed, and keeps its sequence numbers, so the gateway's cursor stays valid.

Each version also records the Patient it is about (``patient_id``: the Patient's own id
for a Patient, ``''`` for a resource about no patient), so a node whose source has not
changed since its last complete scan serves a patient's record from the feed
(:meth:`patient_resources`) instead of mapping it again (:meth:`NodeService.fetch`).

The feed has an *epoch* (a random id made with the file). A node whose state was lost
starts a new epoch; the gateway sees it and re-reads from zero instead of trusting a
cursor from another history.

Only a complete scan creates tombstones: a scan that failed half-way (source offline)
raises before then, and records the mapping quarantined are kept as they were (a row
that stops mapping is a quality problem to fix at the site, not a deletion).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from federation.envelope import Envelope, patient_of

__all__ = ["Change", "ChangeFeed", "ScanInterrupted", "ScanResult"]

log = logging.getLogger("federation.node.feed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feed_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feed (
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    seq           INTEGER NOT NULL UNIQUE,
    digest        BLOB NOT NULL,
    deleted       INTEGER NOT NULL DEFAULT 0,
    body          BLOB,
    patient_id    TEXT,
    PRIMARY KEY (resource_type, resource_id)
) WITHOUT ROWID;
"""
#: feeds written before versions recorded their patient gain the column (NULL: not yet
#: known; the next complete scan fills it in without new sequence numbers)
_PATIENT_COLUMN = "ALTER TABLE feed ADD COLUMN patient_id TEXT"
_PATIENT_INDEX = "CREATE INDEX IF NOT EXISTS feed_patient ON feed (patient_id)"
_UPSERT = """
INSERT INTO feed (resource_type, resource_id, seq, digest, deleted, body, patient_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (resource_type, resource_id) DO UPDATE SET
    seq = excluded.seq, digest = excluded.digest, deleted = excluded.deleted,
    body = excluded.body, patient_id = excluded.patient_id
"""
_INDEX_PATIENT = "UPDATE feed SET patient_id = ? WHERE resource_type = ? AND resource_id = ?"
#: a patient's record in the order the node maps it: Patient, Encounters, Conditions, rest
_RANK = ("CASE resource_type WHEN 'Patient' THEN 0 WHEN 'Encounter' THEN 1 "
         "WHEN 'Condition' THEN 2 ELSE 3 END")
_BATCH = 1000
_TOMBSTONE = b"\0deleted"


class ScanInterrupted(Exception):
    """A scan given up before its end (the node is stopping); nothing is tombstoned."""


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    resource_type: str
    resource_id: str
    deleted: bool
    body: bytes  # FHIR JSON; empty for a tombstone


@dataclass(frozen=True, slots=True)
class ScanResult:
    scanned: int
    changed: int
    deleted: int
    head: int


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def _patient(env: Envelope) -> str:
    """The Patient the resource is about ('' for none): what the feed indexes it under."""
    if env.resource_type == "Patient":
        return env.id
    try:
        data = json.loads(env.json)
    except ValueError:
        return ""
    return (patient_of(env.resource_type, data) or "") if isinstance(data, dict) else ""


class ChangeFeed:
    """One node's feed file. Scans are serialised; readers run alongside (WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._write_lock = threading.Lock()
        with closing(self._connect()) as conn, conn:
            conn.executescript(_SCHEMA)
            if "patient_id" not in {row[1] for row in conn.execute("PRAGMA table_info(feed)")}:
                conn.execute(_PATIENT_COLUMN)
            conn.execute(_PATIENT_INDEX)
            conn.execute("INSERT OR IGNORE INTO feed_meta VALUES ('epoch', ?)",
                         (uuid.uuid4().hex,))
        self.epoch = self._meta("epoch")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _meta(self, key: str) -> str:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT value FROM feed_meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    # ------------------------------------------------------------------ reading

    def head(self) -> int:
        """The newest sequence number (0 for an empty feed)."""
        with closing(self._connect()) as conn:
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM feed").fetchone()[0])

    def changes(self, after: int, *, limit: int = 500, max_bytes: int = 1 << 20) -> list[Change]:
        """The versions after ``after`` in sequence order: at most ``limit`` of them and,
        past the first, no more than ``max_bytes`` of JSON."""
        out: list[Change] = []
        size = 0
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT seq, resource_type, resource_id, deleted, body FROM feed "
                "WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
            for seq, rtype, rid, deleted, body in rows:
                body = bytes(body or b"")
                if out and size + len(body) > max_bytes:
                    break
                size += len(body)
                out.append(Change(int(seq), rtype, rid, bool(deleted), body))
        return out

    def patient_resources(self, patient_id: str, resource_types: Iterable[str] = ()
                          ) -> list[Change]:
        """The live versions about one Patient (the Patient itself first, then its
        Encounters, Conditions and the rest, each in feed order), of ``resource_types``
        (empty: all)."""
        types = sorted(set(resource_types))
        where = f" AND resource_type IN ({','.join('?' * len(types))})" if types else ""
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT seq, resource_type, resource_id, body FROM feed "
                f"WHERE patient_id = ? AND deleted = 0{where} ORDER BY {_RANK}, seq",
                (patient_id, *types)).fetchall()
        return [Change(int(seq), rtype, rid, False, bytes(body or b""))
                for seq, rtype, rid, body in rows]

    def count(self) -> dict[str, int]:
        """Live (not deleted) resources per type."""
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT resource_type, count(*) FROM feed WHERE deleted = 0 "
                                "GROUP BY resource_type ORDER BY resource_type").fetchall()
        return {str(t): int(n) for t, n in rows}

    # ------------------------------------------------------------------ writing

    def apply_scan(self, resources: Iterable[Envelope],
                   keep: Callable[[], Iterable[tuple[str, str]]] = tuple,
                   on_progress: Callable[[int], None] | None = None) -> ScanResult:
        """Record one complete scan of the source; see the module docstring.

        ``resources`` is consumed lazily (it is the source being read); if it raises,
        the versions already recorded stay (they are true) and no tombstone is written.
        ``keep()``, asked once the scan is complete, lists (type, id) pairs to leave alone
        although the scan did not yield them (the records that failed to map this time).
        """
        with self._write_lock, closing(self._connect()) as conn:
            known = {(t, i): (bytes(d), bool(x), p is not None) for t, i, d, x, p in
                     conn.execute("SELECT resource_type, resource_id, digest, deleted, "
                                  "patient_id FROM feed")}
            head = int(conn.execute("SELECT coalesce(max(seq), 0) FROM feed").fetchone()[0])
            seen: set[tuple[str, str]] = set()
            pending: list[tuple[str, str, int, bytes, int, bytes | None, str | None]] = []
            unindexed: list[tuple[str, str, str]] = []
            scanned = changed = 0
            for env in resources:
                scanned += 1
                key = (env.resource_type, env.id)
                if key in seen:
                    continue  # the same resource reached twice in one scan: first wins
                seen.add(key)
                digest = _digest(env.json)
                held = known.get(key)
                if held is not None and held[:2] == (digest, False):
                    if not held[2]:   # the same version, from before patients were indexed
                        unindexed.append((_patient(env), *key))
                    continue
                head += 1
                changed += 1
                pending.append((*key, head, digest, 0, env.json, _patient(env)))
                if len(pending) >= _BATCH:
                    self._write(conn, pending)
                    if on_progress is not None:
                        on_progress(head)
            kept = set(keep())
            gone = [k for k, (_, deleted, _) in known.items()
                    if not deleted and k not in seen and k not in kept]
            for key in gone:
                head += 1
                pending.append((*key, head, _TOMBSTONE, 1, None, ""))
            self._write(conn, pending)
            if unindexed:
                with conn:
                    conn.executemany(_INDEX_PATIENT, unindexed)
        if changed or gone:
            log.info("change feed: %d resources scanned, %d new or changed, %d deleted; "
                     "head %d", scanned, changed, len(gone), head)
        return ScanResult(scanned, changed, len(gone), head)

    @staticmethod
    def _write(conn: sqlite3.Connection,
               pending: list[tuple[str, str, int, bytes, int, bytes | None, str | None]]
               ) -> None:
        if pending:
            with conn:
                conn.executemany(_UPSERT, pending)
            pending.clear()
