"""Code-system and extension URIs the terminology service writes, spelled in one place.

Where a national standard has no published FHIR canonical URL (GB/T 14396 ICD-10 national
edition, GB/T 2261) the constants below are consortium *placeholders*; replacing one here
(and in the packaged ConceptMaps, which a test cross-checks) is the whole migration.
"""

from __future__ import annotations

__all__ = [
    "BASE",
    "EXTENSION_BASE",
    "ICD10_CN_SYSTEM",
    "ICD_O_3_SYSTEM",
    "LOINC_SYSTEM",
    "QUALIFIER_SYSTEM",
    "SNOMED_SYSTEM",
    "CONDITION_CLINICAL_SYSTEM",
    "CONDITION_VER_STATUS_SYSTEM",
    "extension_url",
]

BASE = "urn:federation:terminology"

#: PLACEHOLDER for ICD-10 GB/T 14396 (national clinical edition); no official FHIR URL known.
ICD10_CN_SYSTEM = "http://terminology.consortium.example/CodeSystem/icd-10-cn"

LOINC_SYSTEM = "http://loinc.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
#: ICD-O-3 morphology (tumour histology, e.g. 8070/3 squamous cell carcinoma)
ICD_O_3_SYSTEM = "http://terminology.hl7.org/CodeSystem/icd-o-3"
CONDITION_CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

#: the normaliser's own qualifier codes (site type, acuity, normalisation status …)
QUALIFIER_SYSTEM = f"{BASE}:CodeSystem/diagnosis-qualifier"

#: extensions the normaliser writes on Condition (and on Condition.bodySite)
EXTENSION_BASE = f"{BASE}:StructureDefinition/"


def extension_url(name: str) -> str:
    """``laterality``, ``morphology``, ``site-type``, ``metastasis-site``, ``acuity``,
    ``normalisation-status``, ``unparsed-text`` → the extension's URL."""
    return f"{EXTENSION_BASE}{name}"
