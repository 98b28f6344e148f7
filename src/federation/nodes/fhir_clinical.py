"""Clinical site records → FHIR R4 JSON (Condition, Observation, DiagnosticReport,
ImagingStudy, MedicationRequest, AllergyIntolerance, DocumentReference).

Same contract as :mod:`federation.nodes.fhir_mapping`: every resource gets a stable id from
its local key, ``meta.source`` = the site, references to the site's Patient/Encounter by
their stable ids, and is validated with the R4B models before it is returned. A record
that cannot be mapped raises :class:`MappingError` naming the resource id and what is
wrong, never the value; the node puts it in its quarantine with that reason.

The R4B models type ``code`` elements as plain strings, so coded values are checked here:
required bindings (status, category, criticality …) against the spec's value set, and
extensible/preferred ones (modality, document type) against the subset this module emits.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation

from federation.errors import MappingError
from federation.fhir_systems import IDENTIFIER_TYPE_SYSTEM, local_diagnosis_code_system, site_urn
from federation.nodes.fhir_mapping import _instant, _meta, _validated, stable_id
from federation.nodes.model import (
    AllergyRecord,
    ConditionRecord,
    DocumentRecord,
    ImagingStudyRecord,
    LabReportRecord,
    LabResultRecord,
    MedicationRecord,
    VitalSignRecord,
)
from federation.terminology import NormalisedDiagnosis, normalise_diagnosis, to_condition
from federation.terminology.systems import ICD10_CN_SYSTEM

__all__ = [
    "LOINC_SYSTEM",
    "UCUM_SYSTEM",
    "VITAL_SIGNS",
    "allergy_to_fhir",
    "condition_to_fhir",
    "document_to_fhir",
    "imaging_study_to_fhir",
    "lab_report_to_fhir",
    "lab_result_to_fhir",
    "local_code_system",
    "medication_to_fhir",
    "vital_sign_to_fhir",
]

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
#: the one ICD-10 system of the consortium (the terminology service's)
ICD10_SYSTEM = ICD10_CN_SYSTEM
DICOM_DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"

#: vital kind → (LOINC codings, UCUM code, unit display, accepted site spellings); FHIR R4
#: §8.1.1 vital signs profile. SpO2 carries both the pulse-oximetry and the generic code.
VITAL_SIGNS: dict[str, tuple[tuple[tuple[str, str], ...], str, str, frozenset[str]]] = {
    "blood-pressure": ((("85354-9", "Blood pressure panel with all children optional"),),
                       "mm[Hg]", "mmHg", frozenset({"mm[Hg]", "mmHg"})),
    "heart-rate": ((("8867-4", "Heart rate"),), "/min", "beats/minute",
                   frozenset({"/min", "bpm", "次/分", "次/min"})),
    "body-temperature": ((("8310-5", "Body temperature"),), "Cel", "C",
                         frozenset({"Cel", "℃", "°C", "C"})),
    "respiratory-rate": ((("9279-1", "Respiratory rate"),), "/min", "breaths/minute",
                         frozenset({"/min", "次/分", "次/min"})),
    "body-weight": ((("29463-7", "Body weight"),), "kg", "kg", frozenset({"kg", "公斤"})),
    "body-height": ((("8302-2", "Body height"),), "cm", "cm", frozenset({"cm", "厘米"})),
    "oxygen-saturation": ((("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
                           ("2708-6", "Oxygen saturation in Arterial blood")),
                          "%", "%", frozenset({"%"})),
}
_BP_COMPONENTS = (("8480-6", "Systolic blood pressure"), ("8462-4", "Diastolic blood pressure"))

#: common laboratory unit spellings at Chinese sites → UCUM; others go out as text only
_LAB_UCUM = {
    "mmol/L": "mmol/L", "umol/L": "umol/L", "μmol/L": "umol/L", "µmol/L": "umol/L",
    "g/L": "g/L", "mg/L": "mg/L", "mg/dL": "mg/dL", "ng/mL": "ng/mL", "pg/mL": "pg/mL",
    "pmol/L": "pmol/L", "U/L": "U/L", "IU/L": "[IU]/L", "mIU/L": "m[IU]/L",
    "10^9/L": "10*9/L", "10^12/L": "10*12/L", "%": "%", "fL": "fL", "pg": "pg", "s": "s",
    "mmHg": "mm[Hg]",
}
_INTERPRETATION = {"H": "High", "L": "Low", "N": "Normal", "HH": "Critical high",
                   "LL": "Critical low", "A": "Abnormal"}
_OBSERVATION_STATUS = frozenset(("registered", "preliminary", "final", "amended", "corrected",
                                 "cancelled", "entered-in-error", "unknown"))
_REPORT_STATUS = _OBSERVATION_STATUS | {"partial", "appended"}
_CONDITION_CLINICAL = frozenset(("active", "recurrence", "relapse", "inactive", "remission",
                                 "resolved"))
_IMAGING_STATUS = frozenset(("registered", "available", "cancelled", "entered-in-error",
                             "unknown"))
_MODALITIES = {"CR": "Computed Radiography", "CT": "Computed Tomography",
               "DX": "Digital Radiography", "MG": "Mammography", "MR": "Magnetic Resonance",
               "NM": "Nuclear Medicine", "PT": "Positron emission tomography",
               "US": "Ultrasound", "XA": "X-Ray Angiography", "RF": "Radio Fluoroscopy",
               "ES": "Endoscopy", "OT": "Other"}
_DICOM_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_MEDICATION_STATUS = frozenset(("active", "on-hold", "cancelled", "completed",
                                "entered-in-error", "stopped", "draft", "unknown"))
_ALLERGY_CATEGORY = frozenset(("food", "medication", "environment", "biologic"))
_ALLERGY_CRITICALITY = frozenset(("low", "high", "unable-to-assess"))
_ALLERGY_CLINICAL = frozenset(("active", "inactive", "resolved"))
_ALLERGY_VERIFICATION = frozenset(("unconfirmed", "confirmed", "refuted", "entered-in-error"))
#: document kind → LOINC document type (FHIR R4 c80-doc-typecodes)
_DOCUMENT_TYPES = {"discharge-summary": ("18842-5", "Discharge summary"),
                   "progress-note": ("11506-3", "Progress note"),
                   "consult-note": ("11488-4", "Consult note"),
                   "operative-note": ("11504-8", "Surgical operation note")}
_QUANTITY = re.compile(r"(<=|>=|<|>)?\s*([+-]?(?:\d+\.?\d*|\.\d+))")


def local_code_system(site_id: str, kind: str) -> str:
    """The site's own code system for ``kind`` (``lab``, ``drug``, ``allergen`` …)."""
    return f"{site_urn(site_id)}:{kind}-code"


def _fail(res: dict[str, Any], what: str) -> MappingError:
    return MappingError(f"{res['resourceType']}/{res['id']}: {what}", code="invalid-fhir")


def _check(res: dict[str, Any], value: str | None, allowed: frozenset[str] | dict[str, Any],
           element: str) -> None:
    if value is not None and value not in allowed:
        raise _fail(res, f"{element} is outside its value set")


def _base(site_id: str, rtype: str, local_id: str, noun: str) -> dict[str, Any]:
    """resourceType, stable id, meta.source and the local key as a site-scoped identifier."""
    return {"resourceType": rtype, "id": stable_id(site_id, rtype, local_id),
            "meta": _meta(site_id, None),
            "identifier": [{"system": f"{site_urn(site_id)}:{noun}-id", "value": local_id}]}


def _ref(site_id: str, rtype: str, local_id: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{stable_id(site_id, rtype, local_id)}"}


def _context(site_id: str, resource: dict[str, Any], patient: str, encounter: str | None,
             subject_key: str = "subject") -> dict[str, Any]:
    resource[subject_key] = _ref(site_id, "Patient", patient)
    if encounter is not None:
        resource["encounter"] = _ref(site_id, "Encounter", encounter)
    return resource


def _concept(text: str, *codings: tuple[str, str | None, str | None]) -> dict[str, Any]:
    """CodeableConcept with text and one coding per (system, code, display) whose code is set."""
    concept: dict[str, Any] = {"text": text}
    coded = [{k: v for k, v in (("system", s), ("code", c), ("display", d)) if v}
             for s, c, d in codings if c]
    if coded:
        concept["coding"] = coded
    return concept


def _status_concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": _TERMINOLOGY + system, "code": code}]}


def _decimal(res: dict[str, Any], value: Decimal) -> float:
    # JSON carries decimals as numbers and json.dumps takes no Decimal; a float keeps
    # every value of up to 15 significant digits exactly
    number = float(value)
    if not math.isfinite(number):
        raise _fail(res, "a quantity is not a finite number")
    return number


@lru_cache(maxsize=8192)
def _normalised(text: str) -> NormalisedDiagnosis:
    """The terminology service's reading of a diagnosis text (pure; sites repeat texts)."""
    return normalise_diagnosis(text)


#: elements of the normaliser's Condition that carry the detail a code alone loses
_DETAIL_ELEMENTS = ("extension", "bodySite", "stage", "note")


def condition_to_fhir(site_id: str, rec: ConditionRecord) -> dict[str, Any]:
    """FHIR R4 Condition (§9.2): ICD-10 and local diagnosis codings, encounter-diagnosis
    when tied to a visit, otherwise a problem-list item.

    The text goes through the diagnosis normaliser, whose detail (laterality, site type,
    morphology, metastasis sites as bodySite/extensions, stage) the Condition keeps. The
    site's ICD-10 code wins over the normaliser's; without either, the Condition stays
    text only, flagged unrecognised, never guessed. Provisional wording (疑似, 待排)
    makes the verification status provisional/differential instead of confirmed."""
    res = _base(site_id, "Condition", rec.local_id, "condition")
    _check(res, rec.clinical_status, _CONDITION_CLINICAL, "Condition.clinicalStatus")
    category = "encounter-diagnosis" if rec.encounter_local_id else "problem-list-item"
    norm = _normalised(rec.text)
    icd = rec.icd10_code or norm.code
    display = norm.display if icd and icd == norm.code else None
    detail = to_condition(norm)
    res.update({
        "clinicalStatus": _status_concept("condition-clinical", rec.clinical_status),
        "verificationStatus": _status_concept("condition-ver-status",
                                              norm.certainty or "confirmed"),
        "category": [_status_concept("condition-category", category)],
        "code": _concept(rec.text, (ICD10_SYSTEM, icd, display),
                         (local_diagnosis_code_system(site_id), rec.local_code, None)),
    })
    res.update({k: detail[k] for k in _DETAIL_ELEMENTS if k in detail})
    _context(site_id, res, rec.patient_local_id, rec.encounter_local_id)
    if rec.onset is not None:
        res["onsetDateTime"] = rec.onset.isoformat()
    if rec.recorded is not None:
        res["recordedDate"] = _instant(rec.recorded)
    return _validated(Condition, res)


def _observation(site_id: str, local_id: str, status: str, category: str) -> dict[str, Any]:
    res = _base(site_id, "Observation", local_id, "observation")
    _check(res, status, _OBSERVATION_STATUS, "Observation.status")
    res["status"] = status
    res["category"] = [_status_concept("observation-category", category)]
    return res


def _lab_value(res: dict[str, Any], rec: LabResultRecord) -> dict[str, Any]:
    if not rec.numeric:
        if not rec.value.strip():
            raise _fail(res, "text lab value is empty")
        return {"valueString": rec.value}
    match = _QUANTITY.fullmatch(rec.value.strip())
    if match is None:
        raise _fail(res, "lab value is declared numeric but is not a decimal number")
    quantity: dict[str, Any] = {"value": _decimal(res, Decimal(match[2]))}
    if match[1]:
        quantity["comparator"] = match[1]
    return {"valueQuantity": quantity | _lab_unit(rec.unit)}


def _lab_unit(unit: str | None) -> dict[str, Any]:
    if not unit:
        return {}
    ucum = _LAB_UCUM.get(unit)
    return {"unit": unit} | ({"system": UCUM_SYSTEM, "code": ucum} if ucum else {})


def lab_result_to_fhir(site_id: str, rec: LabResultRecord) -> dict[str, Any]:
    """FHIR R4 Observation, category laboratory (§8.1.2): LOINC when known plus the site's
    code, valueQuantity (UCUM for known units) or valueString, referenceRange and a
    v3-ObservationInterpretation flag."""
    res = _observation(site_id, rec.local_id, rec.status, "laboratory")
    _check(res, rec.abnormal_flag, _INTERPRETATION, "Observation.interpretation")
    res["code"] = _concept(rec.name, (LOINC_SYSTEM, rec.loinc_code, None),
                           (local_code_system(site_id, "lab"), rec.local_code, rec.name))
    _context(site_id, res, rec.patient_local_id, rec.encounter_local_id)
    res["effectiveDateTime"] = _instant(rec.effective)
    res.update(_lab_value(res, rec))
    if rec.abnormal_flag:
        res["interpretation"] = [{"coding": [{
            "system": _TERMINOLOGY + "v3-ObservationInterpretation",
            "code": rec.abnormal_flag, "display": _INTERPRETATION[rec.abnormal_flag]}]}]
    bounds = {k: {"value": _decimal(res, v)} | _lab_unit(rec.unit)
              for k, v in (("low", rec.reference_low), ("high", rec.reference_high))
              if v is not None}
    if bounds or rec.reference_text:
        res["referenceRange"] = [bounds | ({"text": rec.reference_text}
                                           if rec.reference_text else {})]
    return _validated(Observation, res)


def vital_sign_to_fhir(site_id: str, rec: VitalSignRecord) -> dict[str, Any]:
    """FHIR R4 vital-signs profile Observation (§8.1.1): category vital-signs, the
    profile's LOINC code and UCUM unit; blood pressure as a panel with systolic and
    diastolic components and no value of its own."""
    res = _observation(site_id, rec.local_id, rec.status, "vital-signs")
    if rec.kind not in VITAL_SIGNS:
        raise _fail(res, "vital sign kind is not one of the FHIR vital-signs profiles")
    codings, ucum, display, spellings = VITAL_SIGNS[rec.kind]
    if rec.unit is not None and rec.unit not in spellings:
        raise _fail(res, f"unit is not the {rec.kind} unit ({ucum})")
    res["code"] = {"coding": [{"system": LOINC_SYSTEM, "code": c, "display": d}
                              for c, d in codings], "text": codings[0][1]}
    _context(site_id, res, rec.patient_local_id, rec.encounter_local_id)
    res["effectiveDateTime"] = _instant(rec.effective)

    def quantity(value: Decimal) -> dict[str, Any]:
        return {"value": _decimal(res, value), "unit": display,
                "system": UCUM_SYSTEM, "code": ucum}

    if rec.kind == "blood-pressure":
        if rec.diastolic is None:
            raise _fail(res, "blood pressure needs both systolic and diastolic values")
        res["component"] = [
            {"code": {"coding": [{"system": LOINC_SYSTEM, "code": c, "display": d}]},
             "valueQuantity": quantity(v)}
            for (c, d), v in zip(_BP_COMPONENTS, (rec.value, rec.diastolic))]
    else:
        res["valueQuantity"] = quantity(rec.value)
    return _validated(Observation, res)


def lab_report_to_fhir(site_id: str, rec: LabReportRecord) -> dict[str, Any]:
    """FHIR R4 DiagnosticReport, category LAB (v2-0074), whose results are the stable ids
    of the Observations :func:`lab_result_to_fhir` mints from the same local ids."""
    res = _base(site_id, "DiagnosticReport", rec.local_id, "report")
    _check(res, rec.status, _REPORT_STATUS, "DiagnosticReport.status")
    res.update({
        "status": rec.status,
        "category": [_status_concept("v2-0074", "LAB")],
        "code": _concept(rec.name, (local_code_system(site_id, "report"), rec.local_code,
                                    rec.name)),
        "issued": _instant(rec.issued),
    })
    _context(site_id, res, rec.patient_local_id, rec.encounter_local_id)
    if rec.effective is not None:
        res["effectiveDateTime"] = _instant(rec.effective)
    if rec.result_local_ids:
        res["result"] = [_ref(site_id, "Observation", r) for r in rec.result_local_ids]
    if rec.conclusion:
        res["conclusion"] = rec.conclusion
    return _validated(DiagnosticReport, res)


def imaging_study_to_fhir(site_id: str, rec: ImagingStudyRecord) -> dict[str, Any]:
    """FHIR R4 ImagingStudy (§15.4): the Study Instance UID as a ``urn:dicom:uid``
    identifier, the accession number (v2-0203 ACSN), DICOM modality. Series are not
    listed (sites export study level only), so the body part goes in ``procedureCode``."""
    res = _base(site_id, "ImagingStudy", rec.local_id, "imaging-study")
    _check(res, rec.status, _IMAGING_STATUS, "ImagingStudy.status")
    _check(res, rec.modality, _MODALITIES, "ImagingStudy.modality")
    if rec.study_uid is not None:
        if len(rec.study_uid) > 64 or not _DICOM_UID.fullmatch(rec.study_uid):
            raise _fail(res, "study instance UID is not a DICOM UID (PS3.5 §9.1)")
        res["identifier"].append({"system": "urn:dicom:uid", "value": f"urn:oid:{rec.study_uid}"})
    if rec.accession_number:
        res["identifier"].append({
            "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "ACSN"}]},
            "system": f"{site_urn(site_id)}:accession", "value": rec.accession_number})
    for count in (rec.number_of_series, rec.number_of_instances):
        if count is not None and count < 0:
            raise _fail(res, "series or instance count is negative")
    res.update({"status": rec.status, "modality": [{
        "system": DICOM_DCM_SYSTEM, "code": rec.modality, "display": _MODALITIES[rec.modality]}]})
    _context(site_id, res, rec.patient_local_id, rec.encounter_local_id)
    optional = {"started": _instant(rec.started) if rec.started else None,
                "numberOfSeries": rec.number_of_series,
                "numberOfInstances": rec.number_of_instances,
                "description": rec.description or None,
                "procedureCode": [{"text": rec.body_part}] if rec.body_part else None}
    res.update({k: v for k, v in optional.items() if v is not None})
    return _validated(ImagingStudy, res)


def medication_to_fhir(site_id: str, rec: MedicationRecord) -> dict[str, Any]:
    """FHIR R4 MedicationRequest (§12.10), intent ``order``: the drug as text plus the
    site's drug code, dosage as text, dose quantity, route and frequency text."""
    res = _base(site_id, "MedicationRequest", rec.local_id, "medication-request")
    _check(res, rec.status, _MEDICATION_STATUS, "MedicationRequest.status")
    res.update({
        "status": rec.status, "intent": "order",
        "medicationCodeableConcept": _concept(
            rec.drug_name, (local_code_system(site_id, "drug"), rec.local_code, rec.drug_name)),
        "authoredOn": _instant(rec.authored),
    })
    _context(site_id, res, rec.patient_local_id, rec.encounter_local_id)
    dosage: dict[str, Any] = {}
    text = rec.dose_text or " ".join(filter(None, (
        f"{rec.dose_quantity}{rec.dose_unit or ''}" if rec.dose_quantity is not None else None,
        rec.route, rec.frequency)))
    if text:
        dosage["text"] = text
    if rec.frequency:
        dosage["timing"] = {"code": {"text": rec.frequency}}
    if rec.route:
        dosage["route"] = {"text": rec.route}
    if rec.dose_quantity is not None:
        dose = {"value": _decimal(res, rec.dose_quantity)}
        dosage["doseAndRate"] = [{"doseQuantity": dose | _lab_unit(rec.dose_unit)}]
    if dosage:
        res["dosageInstruction"] = [dosage]
    return _validated(MedicationRequest, res)


def allergy_to_fhir(site_id: str, rec: AllergyRecord) -> dict[str, Any]:
    """FHIR R4 AllergyIntolerance (§9.1) with clinical and verification status codings,
    category, criticality and the reaction's manifestation as text."""
    res = _base(site_id, "AllergyIntolerance", rec.local_id, "allergy")
    _check(res, rec.category, _ALLERGY_CATEGORY, "AllergyIntolerance.category")
    _check(res, rec.criticality, _ALLERGY_CRITICALITY, "AllergyIntolerance.criticality")
    _check(res, rec.clinical_status, _ALLERGY_CLINICAL, "AllergyIntolerance.clinicalStatus")
    _check(res, rec.verification_status, _ALLERGY_VERIFICATION,
           "AllergyIntolerance.verificationStatus")
    res.update({
        "clinicalStatus": _status_concept("allergyintolerance-clinical", rec.clinical_status),
        "verificationStatus": _status_concept("allergyintolerance-verification",
                                              rec.verification_status),
        "category": [rec.category],
        "code": _concept(rec.substance, (local_code_system(site_id, "allergen"),
                                         rec.local_code, rec.substance)),
    })
    # ref-1 (clinicalStatus absent iff entered-in-error) holds: both are always present
    _context(site_id, res, rec.patient_local_id, rec.encounter_local_id, subject_key="patient")
    if rec.criticality:
        res["criticality"] = rec.criticality
    if rec.recorded is not None:
        res["recordedDate"] = _instant(rec.recorded)
    if rec.reaction:
        res["reaction"] = [{"manifestation": [{"text": rec.reaction}]}]
    return _validated(AllergyIntolerance, res)


def document_to_fhir(site_id: str, rec: DocumentRecord) -> dict[str, Any]:
    """FHIR R4 DocumentReference (§3.3.1), status current, LOINC document type; the content
    is inlined as an Attachment with base64 data, size and SHA-1 hash (R4 §2.24.0.3)."""
    res = _base(site_id, "DocumentReference", rec.local_id, "document")
    _check(res, rec.kind, _DOCUMENT_TYPES, "DocumentReference.type (document kind)")
    data = rec.content.encode("utf-8") if isinstance(rec.content, str) else rec.content
    if not data.strip():
        raise _fail(res, "document content is empty")
    if not rec.title.strip():
        raise _fail(res, "document title is empty")
    code, display = _DOCUMENT_TYPES[rec.kind]
    res.update({
        "status": "current",
        "type": {"coding": [{"system": LOINC_SYSTEM, "code": code, "display": display}],
                 "text": display},
        "subject": _ref(site_id, "Patient", rec.patient_local_id),
        "date": _instant(rec.created),
        "description": rec.title,
        "content": [{"attachment": {
            "contentType": rec.content_type,
            "data": base64.b64encode(data).decode("ascii"),
            "size": len(data),
            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),
            "title": rec.title,
            "creation": _instant(rec.created),
        }}],
    })
    if rec.encounter_local_id is not None:
        res["context"] = {"encounter": [_ref(site_id, "Encounter", rec.encounter_local_id)]}
    return _validated(DocumentReference, res)
