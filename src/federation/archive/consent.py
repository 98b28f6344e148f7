"""A patient's FHIR Consent about the regional archive, read as exclusion rules.

FHIR R4 Consent (§6.2, http://hl7.org/fhir/R4/consent.html), scope ``patient-privacy``.
The consortium shares records by default (the regional archive's legal basis); a
Consent narrows that. What this module understands, and refuses anything else with a
400 rather than half-honouring it:

* ``provision.type = deny`` at the top with no nested provisions: nothing of the
  person's record leaves the site that holds it (every other site excluded);
* nested ``provision.provision[]`` of ``type = deny``, each with
  - ``actor[].reference`` = ``Organization/<site id>`` (or an ``identifier`` of system
    ``urn:federation:site-id``): records *held by* that site are excluded, and/or
  - ``class[]`` = resource types (system ``http://hl7.org/fhir/resource-types``):
    those categories are excluded (at the named sites, or everywhere);
* ``status``: only ``active`` Consents apply; ``patient``: ``Patient/<site patient id>``
  or an identifier of the EMPI person system.

Parsing validates with ``fhir.resources`` (R4B models) first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.consent import Consent
from pydantic import ValidationError

from federation.archive.access import ConsentRule
from federation.errors import InvalidInput
from federation.fhir_systems import EMPI_PERSON_SYSTEM, SITE_ID_SYSTEM

__all__ = ["ParsedConsent", "RESOURCE_TYPES_SYSTEM", "parse_consent", "rules_of"]

RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types"
#: the categories a Consent may exclude (what the archive holds)
CATEGORIES = frozenset({"Patient", "Encounter", "Condition", "Observation", "DiagnosticReport",
                        "ImagingStudy", "MedicationRequest", "AllergyIntolerance",
                        "DocumentReference"})
MAX_BYTES = 64 * 1024
_STATUS = frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"})


@dataclass(frozen=True, slots=True)
class ParsedConsent:
    status: str
    patient_record: str | None       # a site Patient id, or
    person_id: str | None            # an EMPI person id
    body: dict[str, Any]


def parse_consent(raw: bytes, known_sites: set[str]) -> ParsedConsent:
    """Validate a posted Consent; InvalidInput naming the problem (never its content)."""
    if len(raw) > MAX_BYTES:
        raise InvalidInput(f"a Consent may be at most {MAX_BYTES // 1024} KiB")
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Consent":
        raise InvalidInput("the body must be a FHIR Consent resource")
    try:
        Consent.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})[:5]
        raise InvalidInput(f"the Consent is not valid FHIR R4: check {', '.join(fields)}"
                           ) from None
    # the R4B models type codes as plain strings: required bindings are checked here
    if data.get("status") not in _STATUS:
        raise InvalidInput(f"Consent.status must be one of {', '.join(sorted(_STATUS))}")
    scope = {c.get("code") for c in (data.get("scope") or {}).get("coding", [])}
    if "patient-privacy" not in scope:
        raise InvalidInput("Consent.scope must be patient-privacy (the archive's consents "
                           "are about sharing records)")
    patient = data.get("patient") or {}
    record = person = None
    ref = patient.get("reference") or ""
    ident = patient.get("identifier") or {}
    if ref.startswith("Patient/") and len(ref) > len("Patient/"):
        record = ref[len("Patient/"):]
    elif ident.get("system") == EMPI_PERSON_SYSTEM and ident.get("value"):
        person = str(ident["value"])
    else:
        raise InvalidInput("Consent.patient must be Patient/<id> or an identifier of "
                           f"system {EMPI_PERSON_SYSTEM}")
    rules_of(data, known_sites, consent_id="(new)")  # refuses what it cannot honour
    return ParsedConsent(str(data.get("status")), record, person, data)


def rules_of(data: dict[str, Any], known_sites: set[str], *, consent_id: str
             ) -> list[ConsentRule]:
    """The exclusions an (already validated) active Consent makes; [] when inactive."""
    provision = data.get("provision") or {}
    nested = provision.get("provision") or []
    if provision.get("type") not in ("permit", "deny"):
        raise InvalidInput("Consent.provision.type must be permit or deny")
    if provision.get("type") == "deny" and not nested:
        sites, classes = _actors(provision, known_sites), _classes(provision)
        return [ConsentRule(consent_id, sites, classes)]
    rules = []
    for i, sub in enumerate(nested):
        if sub.get("type") != "deny":
            raise InvalidInput(f"Consent.provision.provision[{i}].type must be deny (sharing "
                               "is the default; a Consent only narrows it)")
        if sub.get("provision"):
            raise InvalidInput("Consent provisions nest one level at most here")
        sites, classes = _actors(sub, known_sites), _classes(sub)
        if not sites and not classes:
            raise InvalidInput(f"Consent.provision.provision[{i}] names no site (actor) and "
                               "no category (class): it would exclude everything; say so "
                               "with a top-level deny instead")
        rules.append(ConsentRule(consent_id, sites, classes))
    return rules if data.get("status") == "active" else []


def _actors(provision: dict[str, Any], known_sites: set[str]) -> frozenset[str]:
    sites = set()
    for actor in provision.get("actor") or []:
        ref = actor.get("reference") or {}
        value = None
        if (ref.get("reference") or "").startswith("Organization/"):
            value = ref["reference"][len("Organization/"):]
        elif (ref.get("identifier") or {}).get("system") == SITE_ID_SYSTEM:
            value = ref["identifier"].get("value")
        if not value or value not in known_sites:
            raise InvalidInput("each Consent provision actor must reference a member site as "
                               f"Organization/<site id> or an identifier of {SITE_ID_SYSTEM}")
        sites.add(value)
    return frozenset(sites)


def _classes(provision: dict[str, Any]) -> frozenset[str]:
    classes = set()
    for coding in provision.get("class") or []:
        if coding.get("system") != RESOURCE_TYPES_SYSTEM or coding.get("code") not in CATEGORIES:
            raise InvalidInput(f"each Consent provision class must be a resource type of "
                               f"{RESOURCE_TYPES_SYSTEM} the archive holds: "
                               f"{', '.join(sorted(CATEGORIES))}")
        classes.add(coding["code"])
    return frozenset(classes)
