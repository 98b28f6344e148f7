"""Clinical FHIR mapping: every record type maps to valid R4B that round-trips, carries the
site as meta.source and stable-id references; every illegal record raises MappingError
without patient data in its message."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from hypothesis import given
from hypothesis import strategies as st

from federation.errors import MappingError
from federation.fhir_systems import site_urn
from federation.nodes.fhir_clinical import (
    LOINC_SYSTEM,
    UCUM_SYSTEM,
    VITAL_SIGNS,
    allergy_to_fhir,
    condition_to_fhir,
    document_to_fhir,
    imaging_study_to_fhir,
    lab_report_to_fhir,
    lab_result_to_fhir,
    local_code_system,
    medication_to_fhir,
    vital_sign_to_fhir,
)
from federation.nodes.fhir_mapping import stable_id
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

SITE = "county-a"
PATIENT = "0000100001"
VISIT = "V000001"
WHEN = dt.datetime(2024, 5, 3, 8, 15)
PATIENT_REF = f"Patient/{stable_id(SITE, 'Patient', PATIENT)}"
VISIT_REF = f"Encounter/{stable_id(SITE, 'Encounter', VISIT)}"
#: record fields whose values are patient data and must never reach an error message
PHI_FIELDS = {"text", "name", "value", "reference_text", "title", "content", "substance",
              "drug_name", "reaction", "conclusion", "description", "body_part", "dose_text"}


def _common(local_id: str) -> dict[str, Any]:
    return {"local_id": local_id, "patient_local_id": PATIENT, "encounter_local_id": VISIT}


def condition(**over: Any) -> ConditionRecord:
    return ConditionRecord(**_common("D1") | {
        "text": "2型糖尿病伴周围神经病变", "local_code": "E11.401", "icd10_code": "E11.4",
        "onset": dt.date(2019, 6, 1), "recorded": WHEN} | over)


def lab_result(**over: Any) -> LabResultRecord:
    return LabResultRecord(**_common("L1") | {
        "local_code": "GLU", "loinc_code": "2345-7", "name": "葡萄糖", "value": "7.8",
        "unit": "mmol/L", "reference_low": Decimal("3.9"), "reference_high": Decimal("6.1"),
        "abnormal_flag": "H", "effective": WHEN, "report_local_id": "R1"} | over)


def vital(**over: Any) -> VitalSignRecord:
    return VitalSignRecord(**_common("VS1") | {
        "kind": "blood-pressure", "value": Decimal("142"), "diastolic": Decimal("91"),
        "unit": "mmHg", "effective": WHEN} | over)


def lab_report(**over: Any) -> LabReportRecord:
    return LabReportRecord(**_common("R1") | {
        "name": "生化全套", "local_code": "SH01", "issued": WHEN, "effective": WHEN,
        "result_local_ids": ("L1", "L2"), "conclusion": "血糖偏高"} | over)


def imaging(**over: Any) -> ImagingStudyRecord:
    return ImagingStudyRecord(**_common("1.2.840.113619.2.55.3.1234") | {
        "study_uid": "1.2.840.113619.2.55.3.1234", "accession_number": "CT2024050301",
        "modality": "CT", "started": WHEN, "description": "胸部CT平扫", "body_part": "胸部",
        "number_of_series": 3, "number_of_instances": 412} | over)


def medication(**over: Any) -> MedicationRecord:
    return MedicationRecord(**_common("M1") | {
        "drug_name": "二甲双胍缓释片", "local_code": "YP0012", "dose_quantity": Decimal("0.5"),
        "dose_unit": "g", "route": "口服", "frequency": "每日两次", "authored": WHEN} | over)


def allergy(**over: Any) -> AllergyRecord:
    return AllergyRecord(**_common("A1") | {
        "substance": "青霉素", "local_code": "GM001", "category": "medication",
        "criticality": "high", "reaction": "皮疹伴呼吸困难", "recorded": WHEN} | over)


def document(**over: Any) -> DocumentRecord:
    return DocumentRecord(**_common("DOC1") | {
        "title": "出院小结", "created": WHEN,
        "content": "入院诊断：2型糖尿病。出院医嘱：继续口服二甲双胍。"} | over)


CASES: list[tuple[Callable[..., Any], Callable[..., Any], type[Any], str]] = [
    (condition, condition_to_fhir, Condition, "subject"),
    (lab_result, lab_result_to_fhir, Observation, "subject"),
    (vital, vital_sign_to_fhir, Observation, "subject"),
    (lab_report, lab_report_to_fhir, DiagnosticReport, "subject"),
    (imaging, imaging_study_to_fhir, ImagingStudy, "subject"),
    (medication, medication_to_fhir, MedicationRequest, "subject"),
    (allergy, allergy_to_fhir, AllergyIntolerance, "patient"),
    (document, document_to_fhir, DocumentReference, "subject"),
]


@pytest.mark.parametrize(("factory", "mapper", "model", "subject"), CASES,
                         ids=[c[1].__name__ for c in CASES])
def test_record_maps_validates_and_round_trips(
        factory: Callable[..., Any], mapper: Callable[..., dict[str, Any]],
        model: type[Any], subject: str) -> None:
    rec = factory()
    res = mapper(SITE, rec)
    parsed = model.model_validate(res)
    assert model.model_validate_json(parsed.model_dump_json()) == parsed
    assert parsed.model_dump(mode="json") == res
    assert res["id"] == stable_id(SITE, res["resourceType"], rec.local_id)
    assert res["meta"]["source"] == site_urn(SITE)
    assert res[subject] == {"reference": PATIENT_REF}
    encounter = (res["context"]["encounter"][0] if model is DocumentReference
                 else res["encounter"])
    assert encounter == {"reference": VISIT_REF}
    assert mapper(SITE, factory()) == res  # same record, same resource


def test_lab_result_codes_quantity_range_and_interpretation() -> None:
    res = lab_result_to_fhir(SITE, lab_result())
    assert res["category"][0]["coding"][0]["code"] == "laboratory"
    assert [(c["system"], c["code"]) for c in res["code"]["coding"]] == [
        (LOINC_SYSTEM, "2345-7"), (f"urn:federation:site:{SITE}:lab-code", "GLU")]
    assert res["valueQuantity"] == {"value": 7.8, "unit": "mmol/L",
                                    "system": UCUM_SYSTEM, "code": "mmol/L"}
    assert res["referenceRange"][0]["low"]["value"] == 3.9
    assert res["referenceRange"][0]["high"]["value"] == 6.1
    interpretation = res["interpretation"][0]["coding"][0]
    assert interpretation["code"] == "H"
    assert interpretation["system"].endswith("/v3-ObservationInterpretation")


def test_lab_result_text_value_and_comparator() -> None:
    text = lab_result_to_fhir(SITE, lab_result(value="阴性", numeric=False, unit=None,
                                               loinc_code=None, abnormal_flag="N"))
    assert text["valueString"] == "阴性" and "valueQuantity" not in text
    assert [c["system"] for c in text["code"]["coding"]] == [local_code_system(SITE, "lab")]
    less = lab_result_to_fhir(SITE, lab_result(value="<0.5", unit="IU/L"))
    assert less["valueQuantity"]["comparator"] == "<"
    assert less["valueQuantity"]["code"] == "[IU]/L"
    odd_unit = lab_result_to_fhir(SITE, lab_result(unit="S/CO"))
    assert odd_unit["valueQuantity"] == {"value": 7.8, "unit": "S/CO"}


def test_lab_report_results_are_the_observation_ids() -> None:
    res = lab_report_to_fhir(SITE, lab_report())
    assert res["category"][0]["coding"][0]["code"] == "LAB"
    observations = [lab_result_to_fhir(SITE, lab_result(local_id=i)) for i in ("L1", "L2")]
    assert res["result"] == [{"reference": f"Observation/{o['id']}"} for o in observations]


def test_imaging_study_identifiers_and_modality() -> None:
    res = imaging_study_to_fhir(SITE, imaging())
    assert {"system": "urn:dicom:uid",
            "value": "urn:oid:1.2.840.113619.2.55.3.1234"} in res["identifier"]
    accession = [i for i in res["identifier"] if i.get("type")]
    assert accession[0]["value"] == "CT2024050301"
    assert res["modality"][0]["system"] == "http://dicom.nema.org/resources/ontology/DCM"
    assert (res["numberOfSeries"], res["numberOfInstances"]) == (3, 412)


def test_medication_request_order_and_dosage() -> None:
    res = medication_to_fhir(SITE, medication())
    assert (res["intent"], res["status"]) == ("order", "active")
    assert res["medicationCodeableConcept"]["coding"][0]["code"] == "YP0012"
    dosage = res["dosageInstruction"][0]
    assert dosage["text"] == "0.5g 口服 每日两次"
    assert dosage["route"] == {"text": "口服"}
    assert dosage["timing"] == {"code": {"text": "每日两次"}}
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 0.5


def test_allergy_statuses_and_reaction() -> None:
    res = allergy_to_fhir(SITE, allergy())
    assert res["clinicalStatus"]["coding"][0]["code"] == "active"
    assert res["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert (res["category"], res["criticality"]) == (["medication"], "high")
    assert res["reaction"][0]["manifestation"] == [{"text": "皮疹伴呼吸困难"}]


@pytest.mark.parametrize("content", ["出院小结正文", b"%PDF-1.4 binary\x00\xff"])
def test_document_attachment_carries_data_size_and_sha1(content: str | bytes) -> None:
    content_type = "text/plain;charset=utf-8" if isinstance(content, str) else "application/pdf"
    res = document_to_fhir(SITE, document(content=content, content_type=content_type))
    assert res["status"] == "current"
    assert res["type"]["coding"][0] == {"system": LOINC_SYSTEM, "code": "18842-5",
                                        "display": "Discharge summary"}
    raw = content.encode() if isinstance(content, str) else content
    attachment = res["content"][0]["attachment"]
    assert base64.b64decode(attachment["data"]) == raw
    assert attachment["size"] == len(raw)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(raw).digest()).decode()
    assert attachment["contentType"] == content_type


VITAL_TABLE = [
    ("heart-rate", ["8867-4"], "/min", "次/分"),
    ("body-temperature", ["8310-5"], "Cel", "℃"),
    ("respiratory-rate", ["9279-1"], "/min", None),
    ("body-weight", ["29463-7"], "kg", "kg"),
    ("body-height", ["8302-2"], "cm", "cm"),
    ("oxygen-saturation", ["59408-5", "2708-6"], "%", "%"),
]


def test_vital_table_covers_every_kind() -> None:
    assert {k for k, *_ in VITAL_TABLE} | {"blood-pressure"} == set(VITAL_SIGNS)


@pytest.mark.parametrize(("kind", "loinc", "ucum", "unit"), VITAL_TABLE)
def test_vital_sign_loinc_and_ucum(kind: str, loinc: list[str], ucum: str,
                                   unit: str | None) -> None:
    res = vital_sign_to_fhir(SITE, vital(kind=kind, value=Decimal("36.5"), diastolic=None,
                                         unit=unit))
    Observation.model_validate(res)
    assert res["category"][0]["coding"][0]["code"] == "vital-signs"
    assert [c["code"] for c in res["code"]["coding"]] == loinc
    assert {c["system"] for c in res["code"]["coding"]} == {LOINC_SYSTEM}
    quantity = res["valueQuantity"]
    assert (quantity["system"], quantity["code"], quantity["value"]) == (UCUM_SYSTEM, ucum, 36.5)


def test_blood_pressure_is_a_panel_with_two_components() -> None:
    res = vital_sign_to_fhir(SITE, vital())
    assert res["code"]["coding"][0]["code"] == "85354-9"
    assert "valueQuantity" not in res
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"],
             c["valueQuantity"]["code"]) for c in res["component"]] == [
        ("8480-6", 142.0, "mm[Hg]"), ("8462-4", 91.0, "mm[Hg]")]


INVALID: list[tuple[str, Callable[[], Any], Callable[..., Any]]] = [
    ("unknown vital kind", lambda: vital(kind="pain-score"), vital_sign_to_fhir),
    ("vital unit for another kind", lambda: vital(kind="body-weight", unit="cm", diastolic=None),
     vital_sign_to_fhir),
    ("blood pressure without diastolic", lambda: vital(diastolic=None), vital_sign_to_fhir),
    ("vital value NaN", lambda: vital(kind="heart-rate", value=Decimal("NaN"), unit=None),
     vital_sign_to_fhir),
    ("lab numeric that is not", lambda: lab_result(value="7,8 偏高"), lab_result_to_fhir),
    ("lab numeric overflow", lambda: lab_result(value="9" * 400), lab_result_to_fhir),
    ("lab empty text", lambda: lab_result(value=" ", numeric=False), lab_result_to_fhir),
    ("lab status", lambda: lab_result(status="checked"), lab_result_to_fhir),
    ("lab flag", lambda: lab_result(abnormal_flag="↑"), lab_result_to_fhir),
    ("vital status", lambda: vital(status="done"), vital_sign_to_fhir),
    ("condition status", lambda: condition(clinical_status="chronic"), condition_to_fhir),
    ("report status", lambda: lab_report(status="audited"), lab_report_to_fhir),
    ("imaging status", lambda: imaging(status="done"), imaging_study_to_fhir),
    ("imaging modality", lambda: imaging(modality="XX"), imaging_study_to_fhir),
    ("imaging uid", lambda: imaging(study_uid="CT-2024-001"), imaging_study_to_fhir),
    ("imaging negative count", lambda: imaging(number_of_series=-1), imaging_study_to_fhir),
    ("medication status", lambda: medication(status="dispensed"), medication_to_fhir),
    ("allergy category", lambda: allergy(category="drug"), allergy_to_fhir),
    ("allergy criticality", lambda: allergy(criticality="severe"), allergy_to_fhir),
    ("allergy verification", lambda: allergy(verification_status="yes"), allergy_to_fhir),
    ("document empty", lambda: document(content=b""), document_to_fhir),
    ("document blank text", lambda: document(content="  \n"), document_to_fhir),
    ("document kind", lambda: document(kind="x-ray-film"), document_to_fhir),
    ("document content type", lambda: document(content_type=""), document_to_fhir),
]


@pytest.mark.parametrize(("case", "factory", "mapper"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_record_raises_mapping_error_without_patient_data(
        case: str, factory: Callable[[], Any], mapper: Callable[..., Any]) -> None:
    rec = factory()
    with pytest.raises(MappingError) as info:
        mapper(SITE, rec)
    message = str(info.value)
    assert info.value.code == "invalid-fhir"
    assert "/" in message.split(" ")[0]  # opens with ResourceType/stable-id
    for f in dataclasses.fields(rec):
        value = getattr(rec, f.name)
        if f.name in PHI_FIELDS and isinstance(value, str | bytes) and value.strip():
            assert (value if isinstance(value, str) else value.decode("latin-1")) not in message
    assert PATIENT not in message


@given(st.decimals(min_value=-10**9, max_value=10**9, places=4,
                   allow_nan=False, allow_infinity=False))
def test_numeric_lab_values_map_to_the_same_quantity(value: Decimal) -> None:
    res = lab_result_to_fhir(SITE, lab_result(value=format(value, "f")))
    mapped = Observation.model_validate(res).model_dump(mode="json")["valueQuantity"]["value"]
    assert Decimal(repr(mapped)) == value
