"""Normalisation of one record's demographics: what the EMPI compares, and what it drops."""

from __future__ import annotations

import datetime as dt

from federation.identity.compare import FIELDS, NULL, compare
from federation.identity.features import extract
from federation.synth.people import resident_id

BORN = dt.date(1972, 11, 3)
ID18 = resident_id("532324", BORN, "female", 41)


def test_legacy_15_digit_id_is_upgraded_and_checked_against_the_record() -> None:
    legacy = ID18[:6] + ID18[8:17]
    f = extract({"national_id": legacy, "birth_date": "1972年11月3日", "sex": "女"})
    assert f.national_id == ID18 and [p.code for p in f.problems] == ["name-missing"]
    assert f.sex == "female" and f.birth_date == BORN


def test_id_fills_missing_birth_date_and_sex() -> None:
    f = extract({"national_id": f" {ID18[:6]} {ID18[6:]} "})
    assert (f.birth_date, f.sex) == (BORN, "female")


def test_id_that_contradicts_the_record_is_dropped_with_a_reason() -> None:
    wrong_birth = extract({"national_id": ID18, "birth_date": "1972-11-04"})
    wrong_sex = extract({"national_id": ID18, "sex": "M"})
    bad_check = extract({"national_id": ID18[:17] + ("0" if ID18[17] != "0" else "1")})
    assert wrong_birth.national_id is None and wrong_birth.birth_date == dt.date(1972, 11, 4)
    assert wrong_birth.problems[0].code == "id-birth-conflict"
    assert wrong_sex.national_id is None and wrong_sex.problems[0].code == "id-sex-conflict"
    assert bad_check.national_id is None and bad_check.problems[0].code == "id-invalid"
    # messages describe the problem, never the value
    for f in (wrong_birth, wrong_sex, bad_check):
        assert ID18 not in f.problems[0].message and ID18[:6] not in f.problems[0].message


def test_phone_and_dates_in_the_shapes_sites_write() -> None:
    for raw in ("+86 138-1234-5678", "0086 13812345678", "138 1234 5678"):
        assert extract({"phone": raw}).phone == "13812345678"
    assert extract({"phone": "12-34"}).phone is None
    for raw in ("1972-11-03", "19721103", "1972/11/3", "1972年11月3日", "1972-11-03 00:00:00"):
        assert extract({"birth_date": raw}).birth_date == BORN
    future = extract({"birth_date": "2999-01-01"})
    feb30 = extract({"birth_date": "1972-02-30"})
    assert future.birth_date is None and future.problems[0].code == "birth-date-impossible"
    assert feb30.birth_date is None and feb30.problems[0].code == "birth-date-invalid"


def test_names_meet_across_scripts_orders_and_homophones() -> None:
    simplified = extract({"name": "陈伟华"})
    traditional = extract({"name": "陳偉華"})
    pinyin_surname_first = extract({"name": "CHEN Weihua"})
    pinyin_western = extract({"name": "Weihua Chen"})
    split_fields = extract({"family_name": "陈", "given_name": "伟华"})
    homophone = extract({"name": "陈玮华"})
    given = FIELDS.index("given")
    assert traditional.name == simplified.name == "陈伟华"
    assert compare(simplified, traditional)[given] == 4
    assert compare(simplified, split_fields)[given] == 4
    assert compare(simplified, pinyin_surname_first)[: 2] == (2, 3)
    assert compare(simplified, pinyin_western)[: 2] == (2, 3)
    assert compare(simplified, homophone)[given] == 3
    assert simplified.name_key == pinyin_western.name_key   # one blocking key for all


def test_compound_surnames_and_unrelated_given_names() -> None:
    a = extract({"name": "欧阳明波"})
    b = extract({"name": "欧阳明雪"})
    assert (a.family, a.given) == ("欧阳", "明波")
    assert compare(a, b)[FIELDS.index("given")] == 0     # twins' names share a character


def test_blank_records_and_missing_fields() -> None:
    assert extract({}).blank
    assert extract({"name": " ", "sex": "", "birth_date": ""}).blank
    assert extract({"address": "人民路1号"}).blank
    assert not extract({"national_id": ID18}).blank
    no_name = extract({"national_id": ID18})
    assert "name-missing" in [p.code for p in no_name.problems]
    levels = compare(extract({"name": "张三"}), extract({"name": "张三"}))
    assert levels[FIELDS.index("phone")] == NULL     # absent is no evidence either way


def test_features_survive_their_json_form() -> None:
    f = extract({"site": "s", "record_id": "r", "name": "ZHANG San Feng",
                 "birth_date": "1980-01-02", "national_id": None, "phone": "13800000000",
                 "address": "青岚市城关区人民路12号", "postcode": "100000"})
    again = type(f).from_json("s", "r", f.as_json())
    assert compare(f, again) == compare(f, f)
    assert again.splits == f.splits and again.address_tokens == f.address_tokens
