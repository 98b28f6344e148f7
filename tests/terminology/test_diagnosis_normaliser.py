"""The free-text diagnosis normaliser: the seed, its wording variants, the frequent
township/county diagnoses, never-guess behaviour, and a hypothesis property."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.condition import Condition
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.terminology import (
    ICD10_CN_SYSTEM,
    UNRECOGNISED_NOTE,
    normalise_diagnosis,
    to_condition,
)
from federation.terminology.systems import extension_url

SEED = "左侧中央型肺鳞癌并纵膈淋巴结转移"
SEED_VARIANTS = [
    SEED,
    "左侧中央型肺鳞癌并纵隔淋巴结转移",
    "左肺中央型鳞状细胞癌伴纵隔淋巴结转移",
    "左侧中央型肺鳞癌 纵膈淋巴结转移",
    "左侧中央型肺鳞状细胞癌，伴纵隔淋巴结转移",
    "左中央型肺鳞癌合并纵隔淋巴结转移",
    "中央型左肺鳞癌伴纵膈淋巴结转移",
    "左侧中央型肺鳞癌纵隔淋巴结转移",
    "左肺鳞癌（中央型）并纵隔淋巴结转移",
    "左侧中央型肺癌(鳞癌)，转移至纵隔淋巴结",
    "左侧中央型肺鳞癌伴纵隔淋巴结继发恶性肿瘤",
    "左侧中央型肺鳞状细胞Ca并纵膈淋巴结转移",
]


@pytest.mark.parametrize("text", SEED_VARIANTS)
def test_seed_and_its_wording_variants_keep_every_detail(text: str) -> None:
    result = normalise_diagnosis(text)
    assert result.text == text
    assert (result.code, result.status) == ("C34.9", "complete")
    assert result.laterality == "left" and result.site_type == "central"
    assert result.site and result.site.snomed == ("44029006", "Left lung structure")
    assert result.morphology and result.morphology.icdo == "8070/3"
    assert [s.key for s in result.metastasis_sites] == ["mediastinal-lymph-node"]
    assert result.metastasis_sites[0].snomed[0] == "62683002"
    assert result.unparsed == ()


def test_seed_condition_carries_the_detail_as_fhir() -> None:
    condition = to_condition(normalise_diagnosis(SEED), subject_ref="Patient/p1", site_id="city-1")
    Condition.model_validate(condition)
    assert condition["code"]["text"] == SEED
    assert condition["code"]["coding"] == [
        {"system": ICD10_CN_SYSTEM, "code": "C34.9", "display": "支气管或肺恶性肿瘤"}]
    body = condition["bodySite"][0]
    assert body["text"] == "左肺" and body["coding"][0]["code"] == "44029006"
    assert body["extension"][0]["url"] == extension_url("laterality")
    assert body["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "7771000"
    ext = {e["url"].rsplit("/", 1)[1]: e for e in condition["extension"]}
    assert ext["morphology"]["valueCodeableConcept"]["coding"][0]["code"] == "8070/3"
    assert ext["site-type"]["valueCodeableConcept"]["coding"][0]["code"] == "central"
    assert ext["metastasis-site"]["valueCodeableConcept"]["text"] == "纵隔淋巴结"
    assert ext["normalisation-status"]["valueCoding"]["code"] == "complete"
    assert condition["subject"] == {"reference": "Patient/p1"}
    assert condition["meta"]["source"] == "urn:federation:site:city-1"
    assert "verificationStatus" not in condition and "note" not in condition


# (ICD-10 code, the usual wordings sites write)
FREQUENT = [
    ("I10", ["高血压", "高血压病", "原发性高血压", "HBP", "htn", "高血压病3级 极高危", "高血压2级"]),
    ("E11.9", ["2型糖尿病", "II型糖尿病", "Ⅱ型糖尿病", "二型糖尿病", "糖尿病2型", "T2DM", "2型DM"]),
    ("E14.9", ["糖尿病", "DM"]),
    ("J44.9", ["慢阻肺", "COPD", "慢性阻塞性肺疾病", "慢性阻塞性肺病"]),
    ("J44.1", ["AECOPD", "慢阻肺急性加重", "慢性阻塞性肺疾病急性加重期", "COPD急性加重"]),
    ("I25.1", ["冠心病", "冠状动脉粥样硬化性心脏病", "CHD", "冠状动脉性心脏病"]),
    ("I63.9", ["脑梗死", "脑梗塞", "脑梗", "缺血性卒中", "缺血性脑卒中", "急性脑梗死", "脑血栓"]),
    ("I63.8", ["腔隙性脑梗死", "腔梗"]),
    ("I61.9", ["脑出血", "脑溢血", "出血性卒中"]),
    ("I64", ["脑卒中", "中风", "CVA"]),
    ("J18.9", ["肺炎", "社区获得性肺炎", "CAP", "重症肺炎", "急性肺炎"]),
    ("J06.9", ["急性上呼吸道感染", "上感", "上呼吸道感染"]),
    ("I50.9", ["心力衰竭", "心衰", "慢性心力衰竭", "慢性心衰"]),
    ("I48.9", ["心房颤动", "房颤", "AF"]),
    ("S72.0", ["股骨颈骨折", "左股骨颈骨折", "右侧股骨颈骨折", "股骨颈骨折(左)", "左侧股骨颈闭合性骨折"]),
    ("S72.1", ["股骨粗隆间骨折", "左股骨转子间骨折"]),
    ("S52.5", ["桡骨远端骨折", "右桡骨远端骨折", "桡骨下端骨折", "Colles骨折"]),
    ("S22.3", ["肋骨骨折", "左侧肋骨骨折"]),
    ("S32.0", ["腰椎骨折", "腰椎压缩性骨折"][:1]),
    ("C34.9", ["肺癌", "肺恶性肿瘤", "肺Ca", "肺CA", "左肺癌", "右肺腺癌", "支气管肺癌", "小细胞肺癌", "NSCLC"]),
    ("C34.1", ["右肺上叶腺癌", "左肺上叶鳞癌"]),
    ("C34.3", ["右肺下叶周围型腺癌"]),
    ("C16.9", ["胃癌", "胃恶性肿瘤", "胃腺癌", "胃Ca"]),
    ("C22.9", ["肝癌", "原发性肝癌", "肝恶性肿瘤"]),
    ("C22.0", ["肝细胞癌", "HCC"]),
    ("C15.9", ["食管癌", "食道癌", "食管鳞癌", "食管鳞状细胞癌"]),
    ("C18.9", ["结肠癌", "结肠腺癌"]),
    ("C20", ["直肠癌", "直肠腺癌"]),
    ("C18-C20", ["结直肠癌", "大肠癌"]),
    ("C50.9", ["乳腺癌", "左乳腺癌", "右侧乳腺浸润性导管癌", "乳腺恶性肿瘤"]),
    ("C53.9", ["宫颈癌", "子宫颈癌", "宫颈鳞癌"]),
    ("J45.9", ["支气管哮喘", "哮喘"]),
    ("K29.5", ["慢性胃炎", "慢性浅表性胃炎"]),
    ("M51.2", ["腰椎间盘突出症", "腰突症"]),
]


@pytest.mark.parametrize(("code", "text"), [(c, t) for c, texts in FREQUENT for t in texts])
def test_frequent_diagnoses_and_their_variants(code: str, text: str) -> None:
    result = normalise_diagnosis(text)
    assert result.recognised and result.code == code, result
    assert result.status == "complete", result.unparsed
    Condition.model_validate(to_condition(result))


@pytest.mark.parametrize(("text", "field", "value"), [
    ("左股骨颈骨折", "laterality", "left"),
    ("右肺下叶周围型腺癌", "site_type", "peripheral"),
    ("右肺下叶周围型腺癌", "laterality", "right"),
    ("急性脑梗死", "acuity", None),                 # 急性脑梗死 is one lexicon term
    ("急性肺炎", "acuity", "acute"),
    ("疑似肺炎", "certainty", "provisional"),
    ("肺癌待排", "certainty", "differential"),
    ("高血压病3级 极高危", "grade", "3级"),
    ("高血压病3级 极高危", "risk", "very-high"),
    ("肺腺癌IV期", "stage", "iv期"),
    ("肺癌晚期", "stage", "晚期"),
])
def test_qualifiers(text: str, field: str, value: str | None) -> None:
    assert getattr(normalise_diagnosis(text), field) == value


def test_metastases_to_several_sites() -> None:
    result = normalise_diagnosis("右肺腺癌伴肝、骨、脑转移")
    assert result.code == "C34.9" and result.laterality == "right"
    assert [s.key for s in result.metastasis_sites] == ["liver", "bone", "brain"]
    result = normalise_diagnosis("肝癌肺转移")
    assert result.code == "C22.9" and [s.key for s in result.metastasis_sites] == ["lung"]


def test_uncertainty_becomes_verification_status_never_confirmed() -> None:
    condition = to_condition(normalise_diagnosis("疑似肺炎"))
    assert condition["verificationStatus"]["coding"][0]["code"] == "provisional"
    assert "verificationStatus" not in to_condition(normalise_diagnosis("肺炎"))


@pytest.mark.parametrize("text", [
    "高血压性心脏病",       # I11, not I10
    "2型糖尿病性肾病",      # E11.2, not E11.9
    "新生儿肺炎",           # P23, not J18.9
    "吸入性肺炎",           # J69.0
    "肺炎克雷伯菌感染",
    "肝囊肿",
    "胃溃疡伴出血",
    "纵隔淋巴结转移",       # a metastasis alone: primary not stated
    "头晕待查",
    "abc",
])
def test_unknown_wording_is_kept_as_text_never_guessed(text: str) -> None:
    result = normalise_diagnosis(text)
    assert not result.recognised and result.status == "unrecognised" and result.code is None
    condition = to_condition(result)
    Condition.model_validate(condition)
    assert condition["code"] == {"text": text}
    assert condition["note"] == [{"text": UNRECOGNISED_NOTE}]
    status = next(e for e in condition["extension"]
                  if e["url"] == extension_url("normalisation-status"))
    assert status["valueCoding"]["code"] == "unrecognised"


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_blank_text_is_unrecognised_and_still_valid_fhir(text: str) -> None:
    result = normalise_diagnosis(text)
    assert result.text == text and not result.recognised
    condition = to_condition(result)
    Condition.model_validate(condition)
    assert "code" not in condition and condition["note"] == [{"text": UNRECOGNISED_NOTE}]


def test_unknown_words_in_another_phrase_leave_a_partial_coded_result() -> None:
    result = normalise_diagnosis("高血压病，吸烟")
    assert (result.code, result.status, result.unparsed) == ("I10", "partial", ("吸烟",))
    condition = to_condition(result)
    assert any(e.get("valueString") == "吸烟" for e in condition["extension"])
    assert condition["note"][0]["text"].startswith("partially normalised")


def test_a_second_disease_is_reported_not_dropped() -> None:
    result = normalise_diagnosis("高血压 2型糖尿病")
    assert result.code == "I10" and result.status == "partial"
    assert result.other_diseases == (("E11.9", "2型糖尿病"),)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_never_raises_and_keeps_the_original(text: str) -> None:
    result = normalise_diagnosis(text)
    assert result.text == text
    condition = to_condition(result)
    if text.strip():
        assert condition["code"]["text"] == text
    assert ("coding" in condition.get("code", {})) == result.recognised


LEXICON_ALPHABET = st.sampled_from(list("左右侧中央型肺鳞癌并伴纵膈隔淋巴结转移高血压糖尿病2型骨折股颈肝胃，。 ?急慢性Ca"))


@settings(max_examples=300, deadline=None)
@given(st.lists(LEXICON_ALPHABET, max_size=25).map("".join))
def test_lexicon_shaped_text_gives_valid_fhir(text: str) -> None:
    result = normalise_diagnosis(text)
    Condition.model_validate(to_condition(result, subject_ref="Patient/x"))
    if result.recognised:
        assert result.code and result.status in ("complete", "partial")
