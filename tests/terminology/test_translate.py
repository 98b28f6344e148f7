"""ConceptMaps validate as FHIR; $translate follows the R4 operation's semantics."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.conceptmap import ConceptMap
from fhir.resources.R4B.parameters import Parameters

from federation.errors import InvalidInput, MappingError
from federation.terminology import ICD10_CN_SYSTEM, LOINC_SYSTEM, Terminology, to_parameters
from federation.terminology.systems import QUALIFIER_SYSTEM
from federation.terminology.translate import PACKAGED_MAPS, load_packaged_maps

DATA = resources.files("federation.terminology.data")
SEX = "urn:federation:terminology:CodeSystem/gb-t-2261.1"
SEX_TEXT = "urn:federation:terminology:CodeSystem/local-sex-text"
MARITAL = "urn:federation:terminology:CodeSystem/gb-t-2261.2"
LAB = "urn:federation:terminology:CodeSystem/local-lab-code"
LAB_NAME = "urn:federation:terminology:CodeSystem/local-lab-name"
CITY_DX = "urn:federation:site:city-1:diagnosis-code"
GENDER = "http://hl7.org/fhir/administrative-gender"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"

TERM = Terminology.default()


@pytest.mark.parametrize("name", PACKAGED_MAPS)
def test_every_packaged_map_is_a_valid_fhir_conceptmap(name: str) -> None:
    document = json.loads(DATA.joinpath(name).read_text(encoding="utf-8"))
    cmap = ConceptMap.model_validate(document)
    assert cmap.url and cmap.group and all(g.element for g in cmap.group)


def test_the_qualifier_codesystem_is_valid_and_names_our_system() -> None:
    document = json.loads(DATA.joinpath("codesystem-diagnosis-qualifier.json").read_text("utf-8"))
    assert CodeSystem.model_validate(document).url == QUALIFIER_SYSTEM


def test_diagnosis_map_targets_the_one_icd10_constant() -> None:
    cmap = next(m for m in load_packaged_maps() if m["id"] == "local-diagnosis-to-icd10")
    assert {g["target"] for g in cmap["group"]} == {ICD10_CN_SYSTEM}


@pytest.mark.parametrize(("system", "code", "target", "expected", "equivalence"), [
    (SEX, "1", GENDER, "male", "equivalent"),
    (SEX, "2", GENDER, "female", "equivalent"),
    (SEX, "0", GENDER, "unknown", "equivalent"),
    (SEX, "9", GENDER, "unknown", "equivalent"),
    (SEX_TEXT, "男", GENDER, "male", "equivalent"),
    (SEX_TEXT, "女", GENDER, "female", "equivalent"),
    (MARITAL, "10", V3_MARITAL, "S", "equivalent"),
    (MARITAL, "20", V3_MARITAL, "M", "equivalent"),
    (MARITAL, "22", V3_MARITAL, "M", "wider"),
    (MARITAL, "30", V3_MARITAL, "W", "equivalent"),
    (MARITAL, "40", V3_MARITAL, "D", "equivalent"),
    (LAB, "HBA1C", LOINC_SYSTEM, "4548-4", "equivalent"),
    (LAB, "GLU", LOINC_SYSTEM, "14749-6", "equivalent"),
    (LAB, "LDL-C", LOINC_SYSTEM, "22748-8", "equivalent"),
    (LAB, "TNI", LOINC_SYSTEM, "10839-9", "equivalent"),
    (LAB_NAME, "血红蛋白", LOINC_SYSTEM, "718-7", "equivalent"),
    (CITY_DX, "I10.x00", ICD10_CN_SYSTEM, "I10", "equivalent"),
    (CITY_DX, "E11.900", ICD10_CN_SYSTEM, "E11.9", "equivalent"),
])
def test_translate_finds_the_mapping(system, code, target, expected, equivalence) -> None:
    for target_system in (target, None):
        result = TERM.translate(system, code, target_system)
        assert result.result is True and result.message is None
        assert [(m.system, m.code, m.equivalence) for m in result.matches] == [
            (target, expected, equivalence)]
        assert result.matches[0].source.startswith("urn:federation:terminology:ConceptMap/")


def test_marital_unknown_goes_to_nullflavor_and_targetsystem_filters() -> None:
    nf = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
    assert TERM.translate(MARITAL, "90").matches[0].code == "UNK"
    assert TERM.translate(MARITAL, "90", nf).result is True
    assert TERM.translate(MARITAL, "90", V3_MARITAL).result is False


def test_a_known_system_without_the_code_is_result_false_with_a_message() -> None:
    result = TERM.translate(LAB, "NO-SUCH-TEST")
    assert result.result is False and result.matches == ()
    assert "NO-SUCH-TEST" in result.message


def test_an_unknown_system_is_result_false_not_an_error() -> None:
    result = TERM.translate("urn:example:nowhere", "1")
    assert result.result is False and "urn:example:nowhere" in result.message


def test_a_target_no_map_reaches_is_result_false() -> None:
    result = TERM.translate(SEX, "1", LOINC_SYSTEM)
    assert result.result is False and LOINC_SYSTEM in result.message


@pytest.mark.parametrize(("system", "code"), [("", "1"), (SEX, ""), ("", "")])
def test_missing_system_or_code_is_invalid_input(system: str, code: str) -> None:
    with pytest.raises(InvalidInput):
        TERM.translate(system, code)


def test_reverse_finds_the_local_codes_for_a_standard_one() -> None:
    result = TERM.translate(LOINC_SYSTEM, "718-7", reverse=True)
    assert {(m.system, m.code) for m in result.matches} == {(LAB, "HGB"), (LAB_NAME, "血红蛋白")}


def test_unmapped_provided_and_fixed_modes(tmp_path: Path) -> None:
    def cmap(mode: dict) -> dict:
        return {"resourceType": "ConceptMap", "url": f"urn:test:{mode['mode']}", "status": "draft",
                "group": [{"source": f"urn:src:{mode['mode']}", "target": "urn:tgt",
                           "element": [{"code": "a", "target": [
                               {"code": "A", "equivalence": "equivalent"}]}],
                           "unmapped": mode}]}
    term = Terminology([cmap({"mode": "provided"}), cmap({"mode": "fixed", "code": "OTHER"})])
    assert term.translate("urn:src:provided", "zz").matches[0].code == "zz"
    assert term.translate("urn:src:fixed", "zz").matches[0].code == "OTHER"
    assert term.translate("urn:src:fixed", "a").matches[0].code == "A"


def test_unmatched_equivalence_does_not_make_result_true() -> None:
    term = Terminology([{"resourceType": "ConceptMap", "url": "urn:t", "status": "draft", "group": [
        {"source": "urn:s", "target": "urn:t", "element": [
            {"code": "x", "target": [{"equivalence": "unmatched", "comment": "no target"}]}]}]}])
    result = term.translate("urn:s", "x")
    assert result.result is False and result.matches[0].equivalence == "unmatched"


def test_extra_map_files_are_loaded_and_validated(tmp_path: Path) -> None:
    good = tmp_path / "site.json"
    good.write_text(json.dumps({"resourceType": "ConceptMap", "url": "urn:site",
                                "status": "active",
                                "group": [{"source": "urn:site:lab", "target": LOINC_SYSTEM,
                                           "element": [{"code": "XT", "target": [
                                               {"code": "718-7", "equivalence": "equivalent"}]}]}]}))
    assert Terminology.default([good]).translate("urn:site:lab", "XT").result is True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resourceType": "ConceptMap", "status": "draft", "group": "oops"}))
    with pytest.raises(MappingError):
        Terminology.default([bad])


def test_to_parameters_is_a_valid_fhir_parameters_resource() -> None:
    for result in (TERM.translate(SEX, "1"), TERM.translate(SEX, "7"),
                   TERM.translate(LOINC_SYSTEM, "718-7", reverse=True)):
        document = to_parameters(result)
        Parameters.model_validate(document)
        assert document["parameter"][0] == {"name": "result", "valueBoolean": result.result}
    match = to_parameters(TERM.translate(SEX, "1"))["parameter"][1]
    assert [p["name"] for p in match["part"]] == ["equivalence", "concept", "source"]
