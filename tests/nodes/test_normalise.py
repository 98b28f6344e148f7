"""Normalisation: examples from real site data, and properties checked with hypothesis."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import ric

from federation.errors import InvalidInput
from federation.nodes.adapters.normalise import (
    TRADITIONAL_TO_SIMPLIFIED,
    fold_name,
    is_valid_resident_id,
    legacy_resident_id,
    normalise_phone,
    normalise_resident_id,
    parse_date,
    parse_datetime,
    resident_id_key,
    split_name,
    upgrade_resident_id,
)
from federation.synth.noise import SIMPLIFIED_TO_TRADITIONAL, to_traditional

# GB/T 2260 codes stdnum accepts for every birth year of the 20th century
REGIONS = ("110101", "532322", "532323", "532324", "433122", "330122", "330127")


@pytest.mark.parametrize("text", [
    "1962-3-5", "1962-03-05", "1962/03/05", "1962/3/5", "1962.03.05", "19620305",
    "1962年3月5日", "1962年03月05日", "1962年3月5", " 1962-03-05 ", "1962-03-05 00:00:00",
    "１９６２－０３－０５",
])
def test_parse_date_accepts_the_shapes_sites_write(text: str) -> None:
    assert parse_date(text) == dt.date(1962, 3, 5)


@pytest.mark.parametrize("text, problem", [
    ("1962-02-30", "not a calendar date"), ("19621345", "not a calendar date"),
    ("05/03/1962", "unrecognised format"), ("1962", "unrecognised format"),
    ("", "blank"), ("三月五日", "unrecognised format"),
])
def test_parse_date_refuses_with_a_message_free_of_the_value(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem) as info:
        parse_date(text, what="birth date")
    digits = [c for c in text if c.isdigit() and c != "9"]
    assert not any(c in info.value.message for c in digits)        # shape only: 9999-99-99
    assert "三" not in info.value.message


def test_declared_formats_come_first() -> None:
    assert parse_date("05/03/1962", formats=["%d/%m/%Y"]) == dt.date(1962, 3, 5)
    assert parse_date("03/05/1962", formats=["%m/%d/%Y"]) == dt.date(1962, 3, 5)


@pytest.mark.parametrize("text, expected", [
    ("2023/03/05 09:05", dt.datetime(2023, 3, 5, 9, 5)),
    ("2023-3-5 9:05", dt.datetime(2023, 3, 5, 9, 5)),
    ("2023-03-05 09:05:07", dt.datetime(2023, 3, 5, 9, 5, 7)),
    ("2023-03-05T09:05:07+08:00", dt.datetime(2023, 3, 5, 9, 5, 7)),
    ("20230305090507", dt.datetime(2023, 3, 5, 9, 5, 7)),
    ("202303050905", dt.datetime(2023, 3, 5, 9, 5)),
    ("20230305 16:43", dt.datetime(2023, 3, 5, 16, 43)),
    ("2023年3月5日", dt.datetime(2023, 3, 5)),
])
def test_parse_datetime(text: str, expected: dt.datetime) -> None:
    assert parse_datetime(text) == expected


def test_parse_datetime_refuses_a_bad_time() -> None:
    with pytest.raises(InvalidInput, match="not a valid time"):
        parse_datetime("2023-03-05 25:61")
    with pytest.raises(InvalidInput, match="time part"):
        parse_datetime("2023-03-05 noon")


@pytest.mark.parametrize("text", [
    "13812345678", "+86 138 1234 5678", "+8613812345678", "0086-13812345678",
    "138-1234-5678", " 138 1234 5678 ", "8613812345678", "＋８６ １３８１２３４５６７８",
])
def test_normalise_phone(text: str) -> None:
    assert normalise_phone(text) == "13812345678"


def test_normalise_phone_keeps_landlines_and_blanks() -> None:
    assert normalise_phone("0579-8512 3456") == "057985123456"
    assert normalise_phone("  ") is None and normalise_phone(None) is None


def test_resident_id_cleaning_and_upgrade() -> None:
    assert normalise_resident_id(" 11010119600102001x ") == "11010119600102001X"
    assert normalise_resident_id("'360426 1991 0101 0071") == "360426199101010071"
    assert upgrade_resident_id("360426910101007") == "360426199101010071"   # stdnum's example
    assert legacy_resident_id("360426199101010071") == "360426910101007"
    assert legacy_resident_id("360426200101010071") is None
    assert resident_id_key("360426910101007") == resident_id_key("360426199101010071")
    assert resident_id_key("12345") == "12345"
    assert is_valid_resident_id("360426199101010071")
    assert not is_valid_resident_id("360426199101010072")
    with pytest.raises(InvalidInput, match="15 or 18"):
        upgrade_resident_id("36042619910101")


@given(region=st.sampled_from(REGIONS),
       birth=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(1999, 12, 31)),
       order=st.integers(min_value=0, max_value=999))
def test_upgrading_a_15_digit_id_gives_a_valid_id_with_the_same_birth_date(
        region: str, birth: dt.date, order: int) -> None:
    legacy = f"{region}{birth:%y%m%d}{order:03d}"
    upgraded = upgrade_resident_id(legacy)
    assert ric.is_valid(upgraded)
    assert ric.get_birth_date(upgraded) == birth
    assert upgraded[16] == legacy[14]                               # sex digit kept
    assert legacy_resident_id(upgraded) == legacy
    assert upgrade_resident_id(upgraded.lower()) == upgraded


@given(st.text(alphabet=st.sampled_from(sorted(SIMPLIFIED_TO_TRADITIONAL) + list("明 ·　")),
               max_size=6))
def test_fold_name_is_idempotent_and_ignores_script_and_spacing(name: str) -> None:
    folded = fold_name(name)
    assert fold_name(folded) == folded
    assert fold_name(to_traditional(name)) == folded
    assert " " not in folded and "\u3000" not in folded


def test_every_traditional_character_the_generator_writes_folds_back() -> None:
    for simplified, traditional in SIMPLIFIED_TO_TRADITIONAL.items():
        assert TRADITIONAL_TO_SIMPLIFIED.get(traditional) == simplified


def test_fold_name_handles_width_case_and_dots() -> None:
    assert fold_name("　陳 麗華 ") == "陈丽华"
    assert fold_name("ＺＨＡＮＧ Wei") == "zhangwei"
    assert fold_name("买买提•艾力") == fold_name("买买提·艾力")


@pytest.mark.parametrize("name, parts", [
    ("张伟", ("张", "伟")), ("张志强", ("张", "志强")), ("欧阳明华", ("欧阳", "明华")),
    ("歐陽明", ("歐陽", "明")), ("司马光", ("司马", "光")), ("欧阳", ("欧", "阳")),
    ("张 伟", ("张", "伟")), ("买买提·艾力", (None, None)), ("Zhang Wei", (None, None)),
    ("", (None, None)), ("王", ("王", None)),
])
def test_split_name(name: str, parts: tuple[str | None, str | None]) -> None:
    assert split_name(name) == parts


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31)))
def test_every_site_date_shape_round_trips(day: dt.date) -> None:
    for text in (f"{day.year}-{day.month}-{day.day}", f"{day:%Y/%m/%d}", f"{day:%Y%m%d}",
                 f"{day.year}年{day.month}月{day.day}日"):
        assert parse_date(text) == day


@given(st.from_regex(r"1[3589][0-9]{9}", fullmatch=True),
       st.sampled_from(["{}", "+86 {}", "+86{}", "0086-{}", "0086 {}", "86{}"]),
       st.sampled_from(["", " ", "-"]))
def test_phone_spellings_normalise_to_the_same_digits(number: str, prefix: str,
                                                       sep: str) -> None:
    spaced = sep.join((number[:3], number[3:7], number[7:]))
    assert normalise_phone(prefix.format(spaced)) == number
