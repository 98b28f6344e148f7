"""A :class:`NormalisedDiagnosis` as a FHIR R4 Condition (JSON).

Where FHIR R4 has an element the detail goes there (§ Condition):

* ``code.text`` — the original text, always; ``code.coding`` — ICD-10 only when recognised;
* ``bodySite`` — the primary site (SNOMED CT body structure, lateral variant when one
  exists) carrying a ``laterality`` extension (SNOMED 7771000 left, 24028007 right,
  51440002 bilateral);
* ``stage.summary.text`` — stage or grade words as written (晚期, IV期, 3级);
* ``verificationStatus`` — only for 疑似/待排 wording (provisional/differential); the
  normaliser never asserts ``confirmed``.

The rest are extensions under :data:`~federation.terminology.systems.EXTENSION_BASE`:
``morphology`` (ICD-O-3), ``site-type``, ``metastasis-site`` (one per site), ``acuity``,
``risk``, ``qualifier``, ``normalisation-status`` (complete/partial/unrecognised) and
``unparsed-text``. An unrecognised text gets no coding, status ``unrecognised`` and the
note "not normalised: unknown wording".
"""

from __future__ import annotations

from typing import Any

from federation.fhir_systems import site_urn
from federation.terminology.normalise import BodySite, NormalisedDiagnosis
from federation.terminology.systems import (
    CONDITION_VER_STATUS_SYSTEM,
    ICD10_CN_SYSTEM,
    ICD_O_3_SYSTEM,
    QUALIFIER_SYSTEM,
    SNOMED_SYSTEM,
    extension_url,
)

__all__ = ["to_condition", "UNRECOGNISED_NOTE"]

UNRECOGNISED_NOTE = "not normalised: unknown wording"

_LATERALITY = {
    "left": ("7771000", "Left"),
    "right": ("24028007", "Right"),
    "bilateral": ("51440002", "Right and left"),
}
_LATERALITY_ZH = {"left": "左", "right": "右", "bilateral": "双"}
_SUBSITE_ZH = {"upper-lobe": "上叶", "middle-lobe": "中叶", "lower-lobe": "下叶",
               "main-bronchus": "主支气管"}


def _qualifier(name: str, code: str) -> dict[str, Any]:
    return {"url": extension_url(name),
            "valueCodeableConcept": {"coding": [{"system": QUALIFIER_SYSTEM, "code": code}]}}


def _site_concept(site: BodySite, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text or site.display}
    if site.snomed:
        concept["coding"] = [{"system": SNOMED_SYSTEM, "code": site.snomed[0],
                              "display": site.snomed[1]}]
    return concept


def _body_site(result: NormalisedDiagnosis) -> dict[str, Any] | None:
    if result.site is None:
        return None
    text = (_LATERALITY_ZH.get(result.laterality or "", "") + result.site.display
            + _SUBSITE_ZH.get(result.subsite or "", ""))
    concept = _site_concept(result.site, text)
    if result.laterality:
        code, display = _LATERALITY[result.laterality]
        concept["extension"] = [{"url": extension_url("laterality"), "valueCodeableConcept": {
            "coding": [{"system": SNOMED_SYSTEM, "code": code, "display": display}]}}]
    return concept


def _extensions(result: NormalisedDiagnosis) -> list[dict[str, Any]]:
    ext: list[dict[str, Any]] = []
    if result.morphology:
        m = result.morphology
        ext.append({"url": extension_url("morphology"), "valueCodeableConcept": {
            "coding": [{"system": ICD_O_3_SYSTEM, "code": m.icdo, "display": m.display}],
            "text": m.display}})
    if result.site_type:
        ext.append(_qualifier("site-type", result.site_type))
    for site in result.metastasis_sites:
        ext.append({"url": extension_url("metastasis-site"),
                    "valueCodeableConcept": _site_concept(site)})
    if result.acuity:
        ext.append(_qualifier("acuity", result.acuity))
    if result.risk:
        ext.append(_qualifier("risk", result.risk))
    for code in result.other_qualifiers:
        ext.append(_qualifier("qualifier", code))
    ext.append({"url": extension_url("normalisation-status"),
                "valueCoding": {"system": QUALIFIER_SYSTEM, "code": result.status}})
    for words in result.unparsed:
        ext.append({"url": extension_url("unparsed-text"), "valueString": words})
    return ext


def to_condition(result: NormalisedDiagnosis, *, subject_ref: str | None = None,
                 site_id: str | None = None) -> dict[str, Any]:
    """FHIR R4 Condition JSON for ``result``; see the module docstring.

    ``Condition.subject`` is 1..1 in R4: without ``subject_ref`` a display-only reference
    says the subject is still to be set (the CLI's case).
    """
    # FHIR strings cannot be empty: a blank text leaves Condition.code out altogether
    code: dict[str, Any] = {"text": result.text} if result.text.strip() else {}
    if result.code:
        code["coding"] = [{"system": ICD10_CN_SYSTEM, "code": result.code,
                           "display": result.display}]
    condition: dict[str, Any] = {"resourceType": "Condition"}
    if site_id:
        condition["meta"] = {"source": site_urn(site_id)}
    condition["extension"] = _extensions(result)
    if result.certainty:
        condition["verificationStatus"] = {"coding": [
            {"system": CONDITION_VER_STATUS_SYSTEM, "code": result.certainty}]}
    if code:
        condition["code"] = code
    body_site = _body_site(result)
    if body_site:
        condition["bodySite"] = [body_site]
    condition["subject"] = ({"reference": subject_ref} if subject_ref
                            else {"display": "subject not set (normaliser output)"})
    stage_words = [w for w in (result.stage, result.grade) if w]
    if stage_words:
        condition["stage"] = [{"summary": {"text": " ".join(stage_words)}}]
    if not result.recognised:
        condition["note"] = [{"text": UNRECOGNISED_NOTE}]
    elif result.status == "partial":
        condition["note"] = [{"text": "partially normalised: some words kept only as text"}]
    return condition
