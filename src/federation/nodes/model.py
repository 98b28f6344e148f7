"""Plain domain records that flow between a site adapter, the FHIR mapping and the node server.

Adapters turn each vendor's rows into these records (already normalised: ISO dates,
FHIR gender codes, resident IDs as read); the mapping turns them into FHIR. Nothing here
imports gRPC, SQL or HTTP.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

__all__ = [
    "Gender",
    "PatientQuery",
    "PatientRecord",
    "EncounterRecord",
    "VitalKind",
    "ConditionRecord",
    "LabResultRecord",
    "VitalSignRecord",
    "LabReportRecord",
    "ImagingStudyRecord",
    "MedicationRecord",
    "AllergyRecord",
    "DocumentRecord",
    "ClinicalRecord",
    "CLINICAL_RECORD_TYPES",
]

Gender = Literal["male", "female", "other", "unknown"]


@dataclass(frozen=True, slots=True)
class PatientQuery:
    """Demographic search at one site (PDQm-style: every given criterion must match).

    ``name`` matches the full name or any part of it after normalisation (whitespace and
    case folded); ``identifier`` is a resident ID (15 or 18 digits) or a local patient id;
    ``phone`` is compared digits-only without a +86 prefix.
    """

    name: str | None = None
    family: str | None = None
    given: str | None = None
    birth_date: dt.date | None = None
    gender: Gender | None = None
    identifier: str | None = None
    phone: str | None = None
    limit: int = 50

    def is_empty(self) -> bool:
        return not any(
            (self.name, self.family, self.given, self.birth_date, self.gender,
             self.identifier, self.phone)
        )


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """One patient as a site's system knows them, normalised but not yet FHIR."""

    local_id: str
    name: str
    family: str | None = None
    given: str | None = None
    gender: Gender = "unknown"
    birth_date: dt.date | None = None
    resident_id: str | None = None
    phone: str | None = None
    address: str | None = None
    updated_at: dt.datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EncounterRecord:
    """One visit (outpatient, inpatient, emergency) at a site."""

    local_id: str
    patient_local_id: str
    kind: Literal["outpatient", "inpatient", "emergency"]
    start: dt.datetime
    end: dt.datetime | None = None
    department: str | None = None
    diagnosis_text: str | None = None
    diagnosis_code: str | None = None
    status: Literal["planned", "in-progress", "finished", "cancelled"] = "finished"


# Clinical records. Keyword-only: most fields are strings, and a positional mix-up between
# two of them (a local code and a LOINC code, say) would type-check and map silently wrong.
# Code-valued fields are typed as ``str`` rather than Literal where sites send more than
# the FHIR binding allows; the mapping checks the binding and quarantines what is outside.

VitalKind = Literal["blood-pressure", "heart-rate", "body-temperature", "respiratory-rate",
                    "body-weight", "body-height", "oxygen-saturation"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionRecord:
    """A diagnosis or problem (诊断) as the site recorded it."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    text: str
    local_code: str | None = None
    icd10_code: str | None = None
    onset: dt.date | None = None
    recorded: dt.datetime | None = None
    clinical_status: str = "active"  # FHIR condition-clinical: active, resolved, ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LabResultRecord:
    """One laboratory test result (检验结果). ``value`` is as read; ``numeric`` says whether
    the site declares it a number (``"5.6"``, ``"<0.5"``) or free text (``"阴性"``)."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    local_code: str
    loinc_code: str | None = None
    name: str
    value: str
    numeric: bool = True
    unit: str | None = None
    reference_low: Decimal | None = None
    reference_high: Decimal | None = None
    reference_text: str | None = None
    abnormal_flag: str | None = None  # H, L, N, HH, LL, A
    effective: dt.datetime
    status: str = "final"  # final, preliminary, corrected, ...
    report_local_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VitalSignRecord:
    """One vital sign (生命体征). Blood pressure carries systolic in ``value`` and
    diastolic in ``diastolic``; ``unit`` None means the kind's usual unit."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    kind: VitalKind
    value: Decimal
    diastolic: Decimal | None = None
    unit: str | None = None
    effective: dt.datetime
    status: str = "final"


@dataclass(frozen=True, slots=True, kw_only=True)
class LabReportRecord:
    """A laboratory report (检验报告单) grouping results by their local ids."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    name: str
    local_code: str | None = None
    issued: dt.datetime
    effective: dt.datetime | None = None
    status: str = "final"
    result_local_ids: tuple[str, ...] = ()
    conclusion: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagingStudyRecord:
    """One imaging study (影像检查) as the site's PACS/RIS lists it."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    study_uid: str | None = None  # DICOM Study Instance UID (0020,000D)
    accession_number: str | None = None
    modality: str  # DICOM modality code: CT, MR, DX, US, ...
    started: dt.datetime | None = None
    description: str | None = None
    body_part: str | None = None
    number_of_series: int | None = None
    number_of_instances: int | None = None
    status: str = "available"


@dataclass(frozen=True, slots=True, kw_only=True)
class MedicationRecord:
    """One medication order (医嘱/处方 line)."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    drug_name: str
    local_code: str | None = None
    dose_text: str | None = None
    dose_quantity: Decimal | None = None
    dose_unit: str | None = None
    route: str | None = None
    frequency: str | None = None
    authored: dt.datetime
    status: str = "active"  # FHIR medicationrequest-status


@dataclass(frozen=True, slots=True, kw_only=True)
class AllergyRecord:
    """An allergy or intolerance (过敏史)."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    substance: str
    local_code: str | None = None
    category: str  # food, medication, environment, biologic
    criticality: str | None = None  # low, high, unable-to-assess
    reaction: str | None = None
    recorded: dt.datetime | None = None
    clinical_status: str = "active"
    verification_status: str = "confirmed"


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentRecord:
    """A clinical document (出院小结 …); text content is encoded as UTF-8."""

    local_id: str
    patient_local_id: str
    encounter_local_id: str | None = None
    kind: str = "discharge-summary"
    title: str
    created: dt.datetime
    content: bytes | str
    content_type: str = "text/plain;charset=utf-8"


#: every record an adapter may return from :meth:`SourceAdapter.clinical`
ClinicalRecord = (ConditionRecord | LabResultRecord | VitalSignRecord | LabReportRecord
                  | ImagingStudyRecord | MedicationRecord | AllergyRecord | DocumentRecord)
CLINICAL_RECORD_TYPES: tuple[type, ...] = (
    ConditionRecord, LabResultRecord, VitalSignRecord, LabReportRecord, ImagingStudyRecord,
    MedicationRecord, AllergyRecord, DocumentRecord)
