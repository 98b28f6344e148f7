"""The audit log's verification on demand, and its last result kept in the store.

``POST /api/audit/verify`` runs :func:`federation.audit.verify.verify_store` — the same
recomputation as ``federation audit verify`` — and records the outcome in
``audit_verification``, so that every gateway replica answers ``GET /api/audit/verify``
with the same last result (no replica keeps it in memory). Rows are appended, never
updated: the history of verifications is itself worth keeping.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, insert, select

from federation.audit.verify import verify_store
from federation.store.gateway_store import StoreSessions
from federation.store.models import AuditVerification

__all__ = ["Verification", "Verifications", "run_verification"]


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    tree_size: int
    root: str                                  # hex of the recomputed root
    first_bad_entry: dict[str, object] | None  # kind, leaf, exchange_id, message
    findings: int
    message: str
    verified_at: dt.datetime
    verified_by: str
    duration_ms: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"verified_at": self.verified_at.isoformat()}


def run_verification(engine: Engine, ca_pem: bytes, *, by: str,
                     clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
                     ) -> Verification:
    """Recompute the whole log now (blocking: seconds for a big log; run it in a thread)."""
    started = time.perf_counter()
    report = verify_store(engine, ca_pem)
    first = report.first
    return Verification(ok=report.ok, entries=report.leaves_checked, tree_size=report.tree_size,
                        root=report.root_hash.hex(),
                        first_bad_entry=first.as_json() if first else None,
                        findings=len(report.findings), message=report.summary()[:500],
                        verified_at=clock(), verified_by=by,
                        duration_ms=round((time.perf_counter() - started) * 1000, 1))


_V = AuditVerification.__table__.c


class Verifications(StoreSessions):
    """The verification runs in the shared store."""

    def record(self, v: Verification) -> None:
        with self._write() as s:
            s.execute(insert(AuditVerification.__table__).values(
                verified_at=v.verified_at, verified_by=v.verified_by[:200], ok=v.ok,
                entries=v.entries, tree_size=v.tree_size, root_hash=v.root,
                findings=v.findings, message=v.message[:500], duration_ms=v.duration_ms,
                first_bad_entry=(json.dumps(v.first_bad_entry, ensure_ascii=False)
                                 if v.first_bad_entry else None)))

    def latest(self) -> Verification | None:
        with self._read() as s:
            r = s.execute(select(AuditVerification.__table__).order_by(
                _V.verified_at.desc(), _V.id.desc()).limit(1)).first()
        if r is None:
            return None
        m = r._mapping
        return Verification(ok=bool(m["ok"]), entries=int(m["entries"]),
                            tree_size=int(m["tree_size"]), root=m["root_hash"],
                            first_bad_entry=(json.loads(m["first_bad_entry"])
                                             if m["first_bad_entry"] else None),
                            findings=int(m["findings"]), message=m["message"],
                            verified_at=m["verified_at"], verified_by=m["verified_by"],
                            duration_ms=float(m["duration_ms"]))
