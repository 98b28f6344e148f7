"""Data quality of one site: what maps to FHIR, and what is quarantined and why.

The report comes from a full pass over the site's source through the same adapter and
mapping the node serves from, so it counts exactly what the consortium gets. Quarantined
records are listed with their local key (so the site's staff can find and fix them) and
a reason that names fields and value shapes, never values.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

__all__ = ["QualityReport", "QuarantineEntry"]


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
