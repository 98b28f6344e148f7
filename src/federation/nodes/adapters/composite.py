"""One site, several systems: a HIS plus its LIS feed, a PACS study list, an export.

The first source is the site's master patient index (its HIS); later ones add what they
hold for the same local patient ids (lab results from the LIS, studies from the PACS).
A patient only a later source knows (a lab-only patient registered by ADT) is still the
site's patient. Demographics come from the first source that knows the patient; visits
are merged by visit id (first source wins); clinical records are concatenated in source
order. Quarantined rows of every source are listed together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from federation.nodes.adapters.base import SourceAdapter
from federation.nodes.model import ClinicalRecord, EncounterRecord, PatientQuery, PatientRecord

__all__ = ["CompositeAdapter"]


class CompositeAdapter(SourceAdapter):
    def __init__(self, sources: Sequence[SourceAdapter]) -> None:
        super().__init__()
        if not sources:
            raise ValueError("a composite adapter needs at least one source")
        self.sources = tuple(sources)

    @property  # type: ignore[override]
    def quarantine(self) -> list[tuple[str, str]]:
        return [entry for source in self.sources for entry in source.quarantine]

    @quarantine.setter
    def quarantine(self, value: list[tuple[str, str]]) -> None:
        pass  # the base initialiser's empty list: each source keeps its own

    def search_patients(self, query: PatientQuery) -> list[PatientRecord]:
        found: dict[str, PatientRecord] = {}
        for source in self.sources:
            for rec in source.search_patients(query):
                found.setdefault(rec.local_id, rec)
        return [found[k] for k in sorted(found)][: max(query.limit, 0)]

    def get_patient(self, local_id: str) -> PatientRecord | None:
        for source in self.sources:
            if (rec := source.get_patient(local_id)) is not None:
                return rec
        return None

    def encounters(self, patient_local_id: str) -> list[EncounterRecord]:
        visits: dict[str, EncounterRecord] = {}
        for source in self.sources:
            for visit in source.encounters(patient_local_id):
                visits.setdefault(visit.local_id, visit)
        return sorted(visits.values(), key=lambda v: (v.start, v.local_id))

    def clinical(self, patient_local_id: str) -> list[ClinicalRecord]:
        return [rec for source in self.sources for rec in source.clinical(patient_local_id)]

    def source_stamp(self) -> object | None:
        stamps = tuple(source.source_stamp() for source in self.sources)
        return None if any(s is None for s in stamps) else stamps

    def count_patients(self) -> int:
        return sum(1 for _ in self.iter_patient_ids())

    def iter_patient_ids(self) -> Iterator[str]:
        seen: set[str] = set()
        for source in self.sources:
            for local_id in source.iter_patient_ids():
                if local_id not in seen:
                    seen.add(local_id)
                    yield local_id

    def close(self) -> None:
        for source in self.sources:
            source.close()
