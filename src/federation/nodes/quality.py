"""Data quality of one site: what maps to FHIR, and what is quarantined and why.

The report comes from a full pass over the site's source through the same adapter and
mapping the node serves from, so it counts exactly what the consortium gets. Quarantined
records are listed with their local key (so the site's staff can find and fix them) and
a reason that names fields and value shapes, never values.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from federation.nodes.coding import Unmapped

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
    #: local codes no ConceptMap translates, with how many records carry each
    unmapped: dict[Unmapped, int] = field(default_factory=dict)

    def by_reason(self) -> dict[str, int]:
        """Quarantined records per reason, most frequent first."""
        counts = Counter(entry.reason for entry in self.quarantined)
        return dict(counts.most_common())

    def unmapped_by_kind(self) -> dict[str, dict[str, int]]:
        """{kind: {local code: records}}, kinds sorted, codes most frequent first."""
        out: dict[str, dict[str, int]] = {}
        for gap, n in sorted(self.unmapped.items(), key=lambda i: (i[0].kind, -i[1], i[0].code)):
            out.setdefault(gap.kind, {})[gap.code] = n
        return out

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
            "unmapped_total": sum(self.unmapped.values()),
            "unmapped_codes": self.unmapped_by_kind(),
            "scan_ms": round(self.scan_ms, 1),
        }
