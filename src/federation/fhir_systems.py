"""Naming systems (identifier and code-system URIs) the federation writes into FHIR.

One module so that every producer (node mapping) and consumer (EMPI, archive, console)
spells a system the same way. Site-scoped systems are URNs under the site's own URN so
that two sites' local keys can never collide (FHIR R4 §2.1.0.12 Identifier.system).
"""

from __future__ import annotations

__all__ = [
    "ACT_CODE_SYSTEM",
    "EMPI_PERSON_SYSTEM",
    "IDENTIFIER_TYPE_SYSTEM",
    "RESIDENT_ID_SYSTEM",
    "SITE_ID_SYSTEM",
    "SITE_URN_PREFIX",
    "local_diagnosis_code_system",
    "local_encounter_id_system",
    "local_patient_id_system",
    "site_urn",
]

#: GB 11643 citizen identity number (居民身份证号码), 18 digits with check digit; legacy
#: 15-digit numbers are carried as read and upgraded only for comparison.
RESIDENT_ID_SYSTEM = "urn:federation:id:cn-resident-id"

#: HL7 v3 ActCode, the R4 binding for Encounter.class (AMB, IMP, EMER).
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

#: HL7 v2 table 0203 identifier types (MR = medical record number, NI = national id).
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"

#: the EMPI's person id (one per real person across every site), as the master patient
#: index assigns it: PIXm ``targetIdentifier``, PDQm result identifiers, ``Person.id``
EMPI_PERSON_SYSTEM = "urn:federation:empi:person"

SITE_URN_PREFIX = "urn:federation:site:"

#: a consortium member site's id (city-1, county-a …) as an Organization identifier
SITE_ID_SYSTEM = "urn:federation:site-id"


def site_urn(site_id: str) -> str:
    """The site itself, e.g. as ``meta.source`` of what its node serves."""
    return f"{SITE_URN_PREFIX}{site_id}"


def local_patient_id_system(site_id: str) -> str:
    """The site's own patient id (MRN / 档案号)."""
    return f"{site_urn(site_id)}:patient-id"


def local_encounter_id_system(site_id: str) -> str:
    """The site's own visit id (就诊号)."""
    return f"{site_urn(site_id)}:encounter-id"


def local_diagnosis_code_system(site_id: str) -> str:
    """The site's local diagnosis codes (often ICD-10 with local extensions)."""
    return f"{site_urn(site_id)}:diagnosis-code"
