"""The node's core: answer the gateway's questions from the site adapter, as valid FHIR.

Plain Python over a :class:`SourceAdapter`; the gRPC servicer calls it in a worker
thread. A record that cannot be mapped is quarantined with its reason (row id only in
the log), counted, and left out — it never breaks the answer for the others.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from federation.envelope import Envelope
from federation.errors import MappingError, NotFound
from federation.nodes.adapters import SourceAdapter
from federation.nodes.coding import SiteCoder, Unmapped
from federation.nodes.feed import ChangeFeed
from federation.nodes.fhir_clinical import (
    allergy_to_fhir,
    condition_to_fhir,
    document_to_fhir,
    imaging_study_to_fhir,
    lab_report_to_fhir,
    lab_result_to_fhir,
    medication_to_fhir,
    vital_sign_to_fhir,
)
from federation.nodes.fhir_mapping import encounter_to_fhir, patient_to_fhir, stable_id
from federation.nodes.model import (
    AllergyRecord,
    ClinicalRecord,
    ConditionRecord,
    DocumentRecord,
    EncounterRecord,
    ImagingStudyRecord,
    LabReportRecord,
    LabResultRecord,
    MedicationRecord,
    PatientQuery,
    PatientRecord,
    VitalSignRecord,
)
from federation.nodes.quality import QualityReport, QuarantineEntry

__all__ = ["CLINICAL_MAPPERS", "NodeService", "RESOURCE_TYPES", "visit_condition"]

log = logging.getLogger("federation.node")

Mapper = Callable[[str, Any], dict[str, Any]]
#: record class → (FHIR resource type, mapping function); one table for every clinical kind
CLINICAL_MAPPERS: dict[type, tuple[str, Mapper]] = {
    ConditionRecord: ("Condition", condition_to_fhir),
    LabResultRecord: ("Observation", lab_result_to_fhir),
    VitalSignRecord: ("Observation", vital_sign_to_fhir),
    LabReportRecord: ("DiagnosticReport", lab_report_to_fhir),
    ImagingStudyRecord: ("ImagingStudy", imaging_study_to_fhir),
    MedicationRecord: ("MedicationRequest", medication_to_fhir),
    AllergyRecord: ("AllergyIntolerance", allergy_to_fhir),
    DocumentRecord: ("DocumentReference", document_to_fhir),
}
RESOURCE_TYPES = ("Patient", "Encounter", *dict.fromkeys(t for t, _ in CLINICAL_MAPPERS.values()))
INDEX_REFRESH_SECONDS = 30.0
#: a quality report younger than this is served again instead of rescanning the source
REPORT_MAX_AGE_SECONDS = 60.0


class NodeService:
    def __init__(self, site_id: str, tier: str, adapter: SourceAdapter, adapter_kind: str,
                 coder: SiteCoder | None = None) -> None:
        self.site_id = site_id
        self.coder = coder or SiteCoder(site_id)
        self.tier = tier
        self.adapter_kind = adapter_kind
        self._adapter = adapter
        self._quarantine: dict[tuple[str, str], QuarantineEntry] = {}
        self._index: dict[str, str] | None = None
        self._indexed_at = 0.0
        self._lock = threading.Lock()
        self._report: QualityReport | None = None
        self._report_lock = threading.Lock()
        #: the change feed and the source stamp of its last complete scan (see fetch)
        self._feed: tuple[ChangeFeed, object] | None = None

    # ------------------------------------------------------------------ facts

    def patient_count(self) -> int:
        return self._adapter.count_patients()

    def source_stamp(self) -> object | None:
        return self._adapter.source_stamp()

    def quarantined(self) -> list[QuarantineEntry]:
        """Source rows the adapter skipped, then records that failed to map."""
        source = [QuarantineEntry("source-row", str(key), reason)
                  for key, reason in getattr(self._adapter, "quarantine", [])]
        return source + list(self._quarantine.values())

    # ------------------------------------------------------------------ queries

    def search(self, query: PatientQuery) -> tuple[list[Envelope], bool]:
        records = self._adapter.search_patients(replace(query, limit=query.limit + 1))
        truncated = len(records) > query.limit
        found = [env for record in records[: query.limit]
                 if (env := self._map("Patient", record.local_id, patient_to_fhir, record))]
        return found, truncated

    def serve_from(self, feed: ChangeFeed, stamp: object | None) -> None:
        """The feed now holds a complete scan of the source as it was at ``stamp``."""
        self._feed = (feed, stamp) if stamp is not None else None

    def fetch(self, patient_id: str, resource_types: list[str]) -> Iterator[Envelope]:
        """The patient's resources, Patient first; NotFound for an id this site never issued.

        While the source is unchanged since the change feed's last complete scan, the
        feed already holds exactly what mapping the source would give again: the record
        is read from there (one indexed query). Otherwise, or for a patient the feed does
        not hold, the source is mapped now."""
        wanted = set(resource_types or RESOURCE_TYPES)
        held = self._from_feed(patient_id, wanted)
        if held is not None:
            yield from held
            return
        local_id = self._local_id(patient_id)
        record = self._adapter.get_patient(local_id) if local_id else None
        if record is None:
            raise NotFound(f"site {self.site_id} has no Patient/{patient_id}")
        yield from self._resources(record, wanted)

    def _from_feed(self, patient_id: str, wanted: set[str]) -> list[Envelope] | None:
        view = self._feed
        if view is None or self._adapter.source_stamp() != view[1]:
            return None
        rows = view[0].patient_resources(patient_id, wanted | {"Patient"})
        if not rows or rows[0].resource_type != "Patient":
            return None  # not in the feed (new since the scan, or quarantined): map it
        return [Envelope.from_json(self.site_id, c.resource_type, c.resource_id, c.body)
                for c in rows if c.resource_type in wanted]

    def quality_report(self, *, refresh: bool = False) -> QualityReport:
        """Map the whole source once, through the same path the node serves from, and
        count; reuse a report younger than a minute."""
        with self._report_lock:  # one scan at a time; concurrent callers share its result
            fresh = self._report is not None and (
                dt.datetime.now(dt.UTC) - self._report.generated_at
            ).total_seconds() < REPORT_MAX_AGE_SECONDS
            if not refresh and fresh:
                return self._report  # type: ignore[return-value]
            started = time.perf_counter()
            mapped: Counter[str] = Counter()
            unmapped: Counter[Unmapped] = Counter()
            for env in self.scan(unmapped):
                mapped[env.resource_type] += 1
            self._report = QualityReport(
                site_id=self.site_id,
                generated_at=dt.datetime.now(dt.UTC),
                mapped=dict(mapped),
                unmapped=dict(unmapped),
                quarantined=tuple(sorted(self.quarantined(), key=lambda e: (e.kind, e.local_key))),
                scan_ms=(time.perf_counter() - started) * 1000,
            )
            return self._report

    # ------------------------------------------------------------------ internals

    def scan(self, unmapped: Counter[Unmapped] | None = None) -> Iterator[Envelope]:
        """Every resource the site's source maps to, patient by patient (the quality
        report and the change feed both read the source through here)."""
        for local_id in self._adapter.iter_patient_ids():
            record = self._adapter.get_patient(local_id)
            if record is None:
                continue  # quarantined by the adapter: listed with the source rows
            yield from self._resources(record, RESOURCE_TYPES, unmapped)

    def quarantined_ids(self) -> set[tuple[str, str]]:
        """(resource type, FHIR id) of every record the mapping quarantined."""
        return {(e.kind, stable_id(self.site_id, e.kind, e.local_key))
                for e in list(self._quarantine.values())}

    def _resources(self, record: PatientRecord, wanted: Iterable[str],
                   unmapped: Counter[Unmapped] | None = None) -> Iterator[Envelope]:
        """The patient's mappable resources of the wanted types: Patient, Encounters,
        Conditions (each visit's diagnosis and the source's own), then the rest."""
        wanted = set(wanted)
        if "Patient" in wanted:
            if env := self._map("Patient", record.local_id, patient_to_fhir, record):
                yield env
        visits = self._adapter.encounters(record.local_id) \
            if wanted & {"Encounter", "Condition"} else []
        if "Encounter" in wanted:
            for enc in visits:
                if env := self._map("Encounter", enc.local_id, encounter_to_fhir, enc):
                    yield env
        clinical: list[ClinicalRecord] = [c for v in visits if (c := visit_condition(v))]
        if wanted - {"Patient", "Encounter"}:
            clinical += self._adapter.clinical(record.local_id)
        clinical.sort(key=lambda c: not isinstance(c, ConditionRecord))  # stable: order kept
        for item in clinical:
            resource_type, mapper = CLINICAL_MAPPERS[type(item)]
            if resource_type not in wanted:
                continue
            coded, gap = self.coder.code(item)
            if gap is not None and unmapped is not None:
                unmapped[gap] += 1
            if env := self._map(resource_type, coded.local_id, mapper, coded):
                yield env

    def _map(self, resource_type: str, local_key: str,
             mapper: Callable[[str, Any], dict[str, Any]], record: object) -> Envelope | None:
        """Map one record; a failure is quarantined with its reason and gives None."""
        try:
            return Envelope.from_resource(self.site_id, mapper(self.site_id, record))
        except MappingError as exc:
            self._quarantine_record(resource_type, local_key, exc.message)
            return None

    def _quarantine_record(self, resource_type: str, local_key: str, reason: str) -> None:
        key = (resource_type, local_key)
        if key not in self._quarantine:
            log.warning("quarantined %s with local key hash %s: %s", resource_type,
                        stable_id(self.site_id, resource_type, local_key)[:8], reason)
        self._quarantine[key] = QuarantineEntry(resource_type, local_key, reason)

    def _local_id(self, patient_id: str) -> str | None:
        """FHIR ids are one-way hashes of local keys, so the node keeps the reverse index.

        A miss rebuilds it (new patients arrive at the site), at most every
        ``INDEX_REFRESH_SECONDS`` so that unknown ids cannot make the node rescan its
        source on every call.
        """
        with self._lock:
            stale = time.monotonic() - self._indexed_at > INDEX_REFRESH_SECONDS
            if self._index is None or (patient_id not in self._index and stale):
                self._index = {
                    stable_id(self.site_id, "Patient", local): local
                    for local in self._adapter.iter_patient_ids()
                }
                self._indexed_at = time.monotonic()
            return self._index.get(patient_id)


def visit_condition(visit: EncounterRecord) -> ConditionRecord | None:
    """The visit's diagnosis as an encounter-diagnosis Condition (local key ``visit:<id>``),
    or None for a visit recorded without one."""
    if not (visit.diagnosis_text or visit.diagnosis_code):
        return None
    return ConditionRecord(
        local_id=f"visit:{visit.local_id}", patient_local_id=visit.patient_local_id,
        encounter_local_id=visit.local_id,
        text=visit.diagnosis_text or visit.diagnosis_code or "",
        local_code=visit.diagnosis_code, recorded=visit.start)
