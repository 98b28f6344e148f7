"""A person's summary across sites: JSON for people, and a FHIR document Bundle.

The sections follow the International Patient Summary (HL7 IPS IG, http://hl7.org/fhir/uv/ips/):
problems (LOINC 11450-4), medications (10160-0), allergies (48765-2), results
(30954-2) and — beyond IPS's required set — recent encounters (46240-8). The document is
a Bundle of type ``document`` whose first entry is the Composition (FHIR R4 §3.3
Documents), then every resource the sections reference, each carrying its source site
(``meta.source``, :func:`federation.archive.bundle.entry_resource`).

Selection rules (kept simple, and documented because a clinician relies on them):
problems = Conditions not resolved/inactive/remission, one per code, most recent first;
medications = MedicationRequests active or on-hold, else the :data:`RECENT` most recent;
allergies = every AllergyIntolerance not refuted/entered-in-error; results = the
:data:`RECENT` most recent laboratory Observations; encounters = the :data:`RECENT` most
recent Encounters.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from federation.archive.bundle import entry_resource
from federation.archive.record import PersonRecord, SourcedResource
from federation.archive.search import date_of
from federation.fhir_systems import EMPI_PERSON_SYSTEM, SITE_ID_SYSTEM, site_urn

__all__ = ["RECENT", "SECTIONS", "document", "sections", "summary_json"]

RECENT = 10
LOINC = "http://loinc.org"
#: section key → (LOINC code, title)
SECTIONS = {
    "problems": ("11450-4", "Problem list"),
    "medications": ("10160-0", "History of Medication use"),
    "allergies": ("48765-2", "Allergies and adverse reactions"),
    "results": ("30954-2", "Relevant diagnostic tests/laboratory data"),
    "encounters": ("46240-8", "History of encounters"),
}
_EPOCH = dt.datetime(1, 1, 2, tzinfo=dt.UTC)


def _when(item: SourcedResource) -> dt.datetime:
    found = date_of(item.resource_type, item.data)
    return found[0] if found else _EPOCH


def _status(data: dict[str, Any], key: str) -> str | None:
    concept = data.get(key) or {}
    codes = [c.get("code") for c in concept.get("coding") or []]
    return codes[0] if codes else None


def _newest(items: list[SourcedResource]) -> list[SourcedResource]:
    return sorted(items, key=_when, reverse=True)


def sections(record: PersonRecord) -> dict[str, list[SourcedResource]]:
    by_type: dict[str, list[SourcedResource]] = {}
    for item in record.resources:
        by_type.setdefault(item.resource_type, []).append(item)
    problems, seen = [], set()
    for item in _newest(by_type.get("Condition", [])):
        if _status(item.data, "clinicalStatus") in ("resolved", "inactive", "remission"):
            continue
        key = tuple(sorted((c.get("system"), c.get("code"))
                           for c in (item.data.get("code") or {}).get("coding") or []))
        if key and key in seen:
            continue
        seen.add(key)
        problems.append(item)
    meds = _newest(by_type.get("MedicationRequest", []))
    current = [m for m in meds if m.data.get("status") in ("active", "on-hold")]
    allergies = [a for a in by_type.get("AllergyIntolerance", [])
                 if _status(a.data, "verificationStatus") not in ("refuted", "entered-in-error")]
    labs = [o for o in by_type.get("Observation", [])
            if any(c.get("code") == "laboratory" for cat in o.data.get("category") or []
                   for c in cat.get("coding") or [])]
    return {"problems": problems, "medications": current or meds[:RECENT],
            "allergies": allergies, "results": _newest(labs)[:RECENT],
            "encounters": _newest(by_type.get("Encounter", []))[:RECENT]}


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    coding = next(iter(concept.get("coding") or []), {})
    return concept.get("text") or coding.get("display") or coding.get("code")


def _codes(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [f"{c.get('system', '')}|{c.get('code', '')}" for c in concept.get("coding") or []]


def _value(data: dict[str, Any]) -> str | None:
    q = data.get("valueQuantity")
    if isinstance(q, dict) and "value" in q:
        return f"{q.get('comparator', '')}{q['value']} {q.get('unit', '')}".strip()
    return data.get("valueString")


def _line(item: SourcedResource) -> dict[str, Any]:
    d = item.data
    when = date_of(item.resource_type, d)
    line: dict[str, Any] = {"site": item.site_id, "type": item.resource_type, "id": item.resource_id,
                            "date": when[0].isoformat() if when else None}
    if item.resource_type == "MedicationRequest":
        line |= {"medication": _text(d.get("medicationCodeableConcept")), "status": d.get("status")}
    elif item.resource_type == "Encounter":
        line |= {"class": (d.get("class") or {}).get("code"), "status": d.get("status"),
                 "type": _text(next(iter(d.get("type") or []), None))}
    else:
        line |= {"what": _text(d.get("code")), "codes": _codes(d.get("code"))}
    if item.resource_type == "Observation":
        line["value"] = _value(d)
        line["interpretation"] = _text(next(iter(d.get("interpretation") or []), None))
    if item.resource_type == "AllergyIntolerance":
        line["criticality"] = d.get("criticality")
    if item.also_reported_by:
        line["also_reported_by"] = item.also_reported_by
    return line


def summary_json(record: PersonRecord) -> dict[str, Any]:
    """The summary for people (the console): one line per item, newest first."""
    return {"person_id": record.person.person_id,
            "sites": sorted(record.person.sites),
            "generated_at": dt.datetime.now(dt.UTC).isoformat(),
            **{key: [_line(i) for i in items] for key, items in sections(record).items()},
            "missing_sites": [i.site_id for i in record.issues if i.site_id],
            "withheld_by_consent": record.withheld}


def document(record: PersonRecord, gateway_name: str = "regional archive") -> dict[str, Any]:
    """The IPS-style document Bundle (validated with the R4B models before returning)."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    chosen = sections(record)
    patients = [i for i in record.resources if i.resource_type == "Patient"]
    entries: dict[str, dict[str, Any]] = {}

    def add(item: SourcedResource) -> str:
        url = f"{site_urn(item.site_id)}/{item.resource_type}/{item.resource_id}"
        entries.setdefault(url, {"fullUrl": url, "resource": entry_resource(item)})
        return url

    subject = add(patients[0]) if patients else None
    org_id = str(uuid.uuid4())
    org_url = f"urn:uuid:{org_id}"
    comp_sections = []
    for key, (code, title) in SECTIONS.items():
        refs = [{"reference": add(i)} for i in chosen[key]]
        section: dict[str, Any] = {
            "title": title, "code": {"coding": [{"system": LOINC, "code": code,
                                                 "display": title}]},
            "text": {"status": "generated", "div": _div(title, len(refs))}}
        if refs:
            section["entry"] = refs
        else:
            section["emptyReason"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                "code": "unavailable", "display": "Unavailable"}]}
        comp_sections.append(section)
    composition = {
        "resourceType": "Composition", "id": str(uuid.uuid4()), "status": "final",
        "type": {"coding": [{"system": LOINC, "code": "60591-5",
                             "display": "Patient summary Document"}]},
        "subject": {"reference": subject} if subject else {
            "identifier": {"system": EMPI_PERSON_SYSTEM, "value": record.person.person_id}},
        "date": now, "author": [{"reference": org_url}],
        "title": "Patient summary (regional health archive)",
        "section": comp_sections}
    organization = {"resourceType": "Organization", "id": org_id, "name": gateway_name,
                    "identifier": [{"system": SITE_ID_SYSTEM, "value": "regional-archive"}]}
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "document",
              "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
              "timestamp": now,
              "entry": [{"fullUrl": f"urn:uuid:{composition['id']}", "resource": composition},
                        *entries.values(),
                        {"fullUrl": org_url, "resource": organization}]}
    Bundle.model_validate(bundle)
    return bundle


def _div(title: str, n: int) -> str:
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{title}: {n} item(s)</div>'
