"""Data quality of one site: what maps to FHIR, and what is quarantined and why.

The report comes from a full pass over the site's source through the same adapter and
mapping the node serves from, so it counts exactly what the consortium gets. Quarantined
records are listed with their local key (so the site's staff can find and fix them) and
a reason that names fields and value shapes, never values.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["QualityReport", "QuarantineEntry", "ScanTally"]


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    kind: str
    local_key: str
    reason: str


@dataclass(frozen=True, slots=True)
class QualityReport:
    site_id: str
    generated_at: dt.datetime
    mapped: dict[str, int]
    quarantined: tuple[QuarantineEntry, ...]
    scan_ms: float = 0.0

    def by_reason(self) -> dict[str, int]:
        """Quarantined records per reason, most frequent first."""
        counts = Counter(entry.reason for entry in self.quarantined)
        return dict(counts.most_common())

    def to_json(self) -> dict[str, object]:
        return {
            "site_id": self.site_id,
            "generated_at": self.generated_at.isoformat(),
            "mapped": dict(sorted(self.mapped.items())),
            "mapped_total": sum(self.mapped.values()),
            "quarantined_total": len(self.quarantined),
            "quarantined_by_reason": self.by_reason(),
            "quarantined": [
                {"kind": e.kind, "local_key": e.local_key, "reason": e.reason}
                for e in self.quarantined
            ],
            "scan_ms": round(self.scan_ms, 1),
        }


@dataclass(slots=True)
class ScanTally:
    """Accumulates one pass over a source."""

    site_id: str
    mapped: Counter[str] = field(default_factory=Counter)
    quarantined: dict[tuple[str, str], QuarantineEntry] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def ok(self, resource_type: str) -> None:
        self.mapped[resource_type] += 1

    def bad(self, kind: str, local_key: str, reason: str) -> None:
        self.quarantined.setdefault((kind, local_key), QuarantineEntry(kind, local_key, reason))

    def add_source_rows(self, rows: Iterable[tuple[str, str]]) -> None:
        for key, reason in rows:
            self.bad("source-row", key, reason)

    def report(self) -> QualityReport:
        entries = sorted(self.quarantined.values(), key=lambda e: (e.kind, e.local_key))
        return QualityReport(
            site_id=self.site_id,
            generated_at=dt.datetime.now(dt.UTC),
            mapped=dict(self.mapped),
            quarantined=tuple(entries),
            scan_ms=(time.perf_counter() - self.started) * 1000,
        )
