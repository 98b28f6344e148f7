"""Normalised site records → FHIR R4 JSON (Patient, Encounter), validated before they leave.

Plain Python: no gRPC, SQL or HTTP. Resource ids are stable one-way hashes of the site's
local keys (uuid5), so the same row always gets the same id and ids never reveal an MRN.
Each resource is parsed with the ``fhir.resources`` R4B models before it is returned; a
record that does not make valid FHIR raises :class:`MappingError` naming the resource id
and the failing elements, never their content.

Local times are China Standard Time: sites record wall-clock time without an offset, and
FHIR requires one on any dateTime with a time part (R4 §2.24.0.0.3 dateTime).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from federation.errors import MappingError
from federation.fhir_systems import (
    ACT_CODE_SYSTEM,
    IDENTIFIER_TYPE_SYSTEM,
    RESIDENT_ID_SYSTEM,
    SITE_ID_SYSTEM,
    local_diagnosis_code_system,
    local_encounter_id_system,
    local_patient_id_system,
    site_urn,
)
from federation.nodes.adapters.normalise import split_name
from federation.nodes.model import EncounterRecord, PatientRecord

__all__ = [
    "FHIR_ID_NAMESPACE",
    "SITE_TIMEZONE",
    "encounter_to_fhir",
    "patient_to_fhir",
    "stable_id",
]

#: fixed namespace of every resource id a node mints (never change: ids would all move)
FHIR_ID_NAMESPACE = uuid.UUID("6f1f3c2e-5b7a-5d8e-9c41-2a7e0d9b4f10")
SITE_TIMEZONE = dt.timezone(dt.timedelta(hours=8), "CST")

_GENDERS = frozenset(("male", "female", "other", "unknown"))
_STATUSES = frozenset(("planned", "arrived", "triaged", "in-progress", "onleave", "finished",
                       "cancelled", "entered-in-error", "unknown"))
_ENCOUNTER_CLASS = {
    "outpatient": ("AMB", "ambulatory"),
    "inpatient": ("IMP", "inpatient encounter"),
    "emergency": ("EMER", "emergency"),
}


def stable_id(site_id: str, resource_type: str, local_key: str) -> str:
    """A FHIR id (36 chars, within R4's 64-char ``[A-Za-z0-9\\-\\.]``) that is the same for
    the same site, type and local key on every node run and every machine."""
    return str(uuid.uuid5(FHIR_ID_NAMESPACE, f"{site_id}/{resource_type}/{local_key}"))


def _instant(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=SITE_TIMEZONE)
    return value.isoformat()


def _meta(site_id: str, updated: dt.datetime | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": site_urn(site_id)}
    if updated is not None:
        meta["lastUpdated"] = _instant(updated)
    return meta


def _identifier_type(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": code, "display": display}]}


def _org(site_id: str, site_name: str | None) -> dict[str, Any]:
    return {"identifier": {"system": SITE_ID_SYSTEM, "value": site_id},
            "display": site_name or site_id}


def patient_to_fhir(site_id: str, rec: PatientRecord, *,
                    site_name: str | None = None) -> dict[str, Any]:
    """FHIR R4 Patient for one site record (PDQm-conformant demographics)."""
    pid = stable_id(site_id, "Patient", rec.local_id)
    # the R4B models type code elements as plain strings, so required bindings are ours
    if rec.gender not in _GENDERS:
        raise MappingError(f"Patient/{pid}: gender is not an AdministrativeGender code",
                           code="invalid-fhir")
    identifiers = [{"use": "usual", "type": _identifier_type("MR", "Medical record number"),
                    "system": local_patient_id_system(site_id), "value": rec.local_id}]
    if rec.resident_id:
        identifiers.append({"use": "official",
                            "type": _identifier_type("NI", "National unique individual identifier"),
                            "system": RESIDENT_ID_SYSTEM, "value": rec.resident_id})
    family, given = (rec.family, rec.given) if rec.family or rec.given else split_name(rec.name)
    name: dict[str, Any] = {"use": "official", "text": rec.name}
    if family:
        name["family"] = family
    if given:
        name["given"] = [given]
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "meta": _meta(site_id, rec.updated_at),
        "identifier": identifiers,
        "name": [name],
        "gender": rec.gender,
        "managingOrganization": _org(site_id, site_name),
    }
    if rec.birth_date is not None:
        resource["birthDate"] = rec.birth_date.isoformat()
    if rec.phone:
        mobile = len(rec.phone) == 11 and rec.phone.startswith("1")
        resource["telecom"] = [{"system": "phone", "value": rec.phone,
                                "use": "mobile" if mobile else "home"}]
    if rec.address:
        resource["address"] = [{"use": "home", "text": rec.address}]
    return _validated(Patient, resource)


def encounter_to_fhir(site_id: str, rec: EncounterRecord, *,
                      site_name: str | None = None) -> dict[str, Any]:
    """FHIR R4 Encounter for one visit; the subject is the site's Patient by stable id."""
    eid = stable_id(site_id, "Encounter", rec.local_id)
    # the R4B models type code elements as plain strings, so required bindings are ours
    if rec.kind not in _ENCOUNTER_CLASS or rec.status not in _STATUSES:
        raise MappingError(f"Encounter/{eid}: visit kind or status is outside the R4 "
                           "bindings (v3-ActCode AMB/IMP/EMER, EncounterStatus)",
                           code="invalid-fhir")
    code, display = _ENCOUNTER_CLASS[rec.kind]
    period = {"start": _instant(rec.start)}
    if rec.end is not None:
        period["end"] = _instant(rec.end)
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "meta": _meta(site_id, None),
        "identifier": [{"system": local_encounter_id_system(site_id), "value": rec.local_id}],
        "status": rec.status,
        "class": {"system": ACT_CODE_SYSTEM, "code": code, "display": display},
        "subject": {"reference": f"Patient/{stable_id(site_id, 'Patient', rec.patient_local_id)}"},
        "period": period,
        "serviceProvider": _org(site_id, site_name),
    }
    if rec.department:
        resource["serviceType"] = {"text": rec.department}
    if rec.diagnosis_text or rec.diagnosis_code:
        reason: dict[str, Any] = {"text": rec.diagnosis_text or rec.diagnosis_code}
        if rec.diagnosis_code:
            coding = {"system": local_diagnosis_code_system(site_id), "code": rec.diagnosis_code}
            if rec.diagnosis_text:
                coding["display"] = rec.diagnosis_text
            reason["coding"] = [coding]
        resource["reasonCode"] = [reason]
    return _validated(Encounter, resource)


def _validated(model: type[DomainResource], resource: dict[str, Any]) -> dict[str, Any]:
    """The resource unchanged if the R4B model accepts it, else MappingError naming the
    elements (locations and error types only: the input values are patient data)."""
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['type']}"
            for err in exc.errors(include_input=False, include_url=False)[:5])
        raise MappingError(
            f"{resource['resourceType']}/{resource['id']} is not valid FHIR R4: {problems}",
            code="invalid-fhir") from None
    return resource
