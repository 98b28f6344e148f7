"""Local codes → standard codes at the node, before anything leaves the site.

The node runs the consortium's ConceptMaps (:class:`federation.terminology.Terminology`)
over each record it maps: a diagnosis's local code becomes ICD-10, a lab item's local
code (or, failing that, its Chinese name) becomes LOINC. What no map covers stays as the
site sent it and is *counted* as unmapped, so the quality report shows the mapping gaps a
terminologist should close; nothing is guessed.

Sites that already code diagnoses in ICD-10 (county hospitals do) need no map: a code of
the ICD-10 shape (``I10``, ``J44.9``) is taken as it is. National-edition extensions
(``I10.x00``, ``E11.900``) are not ICD-10 codes and need the site's map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TypeVar

from federation.fhir_systems import local_diagnosis_code_system
from federation.nodes.model import ConditionRecord, LabResultRecord
from federation.terminology import ICD10_CN_SYSTEM, LOINC_SYSTEM, Terminology

__all__ = ["ICD10_SHAPE", "LOCAL_LAB_CODE_SYSTEM", "LOCAL_LAB_NAME_SYSTEM", "SiteCoder",
           "Unmapped"]

#: a WHO ICD-10 code: letter, two digits, optionally a dot and one or two digits
ICD10_SHAPE = re.compile(r"[A-Z][0-9]{2}(?:\.[0-9]{1,2})?")
#: consortium-wide LIS item codes and names (the packaged lab ConceptMap's sources)
LOCAL_LAB_CODE_SYSTEM = "urn:federation:terminology:CodeSystem/local-lab-code"
LOCAL_LAB_NAME_SYSTEM = "urn:federation:terminology:CodeSystem/local-lab-name"

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A local code no ConceptMap translates: ``kind`` is ``diagnosis-code`` or
    ``lab-code``; the code is the site's own (codes are not patient data)."""

    kind: str
    code: str


class SiteCoder:
    """Fills standard codes into one site's records; immutable, safe to share."""

    def __init__(self, site_id: str, terminology: Terminology | None = None) -> None:
        self.site_id = site_id
        self._terminology = terminology or Terminology.default()
        self._diagnosis_system = local_diagnosis_code_system(site_id)

    def code(self, record: R) -> tuple[R, Unmapped | None]:
        """The record with its standard code filled where a map knows it, and what stayed
        unmapped (None when nothing did). Records of other kinds pass through."""
        if isinstance(record, ConditionRecord):
            return self._condition(record)  # type: ignore[return-value]
        if isinstance(record, LabResultRecord):
            return self._lab(record)  # type: ignore[return-value]
        return record, None

    def icd10(self, local_code: str) -> str | None:
        """ICD-10 for a site's diagnosis code: its map first, then the ICD-10 shape."""
        found = self._first(self._diagnosis_system, local_code, ICD10_CN_SYSTEM)
        if found is None and ICD10_SHAPE.fullmatch(local_code):
            return local_code
        return found

    def loinc(self, local_code: str | None, name: str | None) -> str | None:
        """LOINC for a lab item by its LIS code, else by its Chinese name."""
        if local_code:
            found = self._first(LOCAL_LAB_CODE_SYSTEM, local_code.strip().upper(), LOINC_SYSTEM)
            if found:
                return found
        if name:
            return self._first(LOCAL_LAB_NAME_SYSTEM, name.strip(), LOINC_SYSTEM)
        return None

    def _condition(self, rec: ConditionRecord) -> tuple[ConditionRecord, Unmapped | None]:
        if rec.icd10_code or not rec.local_code:
            return rec, None
        icd = self.icd10(rec.local_code)
        if icd is None:
            return rec, Unmapped("diagnosis-code", rec.local_code)
        return replace(rec, icd10_code=icd), None

    def _lab(self, rec: LabResultRecord) -> tuple[LabResultRecord, Unmapped | None]:
        if rec.loinc_code:
            return rec, None
        loinc = self.loinc(rec.local_code, rec.name)
        if loinc is None:
            return rec, Unmapped("lab-code", rec.local_code)
        return replace(rec, loinc_code=loinc), None

    def _first(self, system: str, code: str, target: str) -> str | None:
        result = self._terminology.translate(system, code, target)
        if not result.result:
            return None
        usable = [m for m in result.matches if m.equivalence not in ("unmatched", "disjoint")]
        return usable[0].code if usable else None
