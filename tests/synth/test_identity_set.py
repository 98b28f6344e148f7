"""The synthetic EMPI benchmark set: complete truth, planted hard cases, vendor formats."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from federation.identity.features import INPUT_COLUMNS, Features, extract
from federation.synth.identity_set import (
    IdentitySet,
    build_identity_set,
    identity_records,
    write_identity_set,
)

SEED = 7


@pytest.fixture(scope="module")
def data() -> IdentitySet:
    return build_identity_set(2000, SEED)


def test_every_record_has_the_input_columns_and_a_true_person(data: IdentitySet) -> None:
    assert len(data.rows) == 2000
    ids = [r["record_id"] for r in data.rows]
    assert len(set(ids)) == len(ids)
    assert set(ids) == set(data.truth)
    assert all(tuple(r) == INPUT_COLUMNS for r in data.rows)
    assert len(set(data.truth.values())) == data.people
    # people appear more than once: across sites and as duplicates within one site
    per_person = Counter(data.truth.values())
    assert sum(1 for n in per_person.values() if n >= 2) > data.people // 4
    same_site = Counter((r["site"], data.truth[r["record_id"]]) for r in data.rows)
    assert sum(1 for n in same_site.values() if n >= 2) >= 10


def _groups_of_distinct_people(data: IdentitySet, kind: str) -> list[list[str]]:
    groups = data.hard_cases[kind]
    assert groups, kind
    for group in groups:
        assert len({data.truth[r] for r in group}) >= 2, (kind, group)
    return groups


def _features(data: IdentitySet) -> dict[str, Features]:
    return {r["record_id"]: extract(r) for r in data.rows}


def test_hard_cases_share_what_makes_them_hard(data: IdentitySet) -> None:
    feats = _features(data)

    def shared(groups: list[list[str]], key: Callable[[Features], object]) -> int:
        """Groups holding two records of different people with the same non-empty key."""
        count = 0
        for group in groups:
            seen: dict[object, set[str]] = defaultdict(set)
            for record_id in group:
                value = key(feats[record_id])
                if value is not None:
                    seen[value].add(data.truth[record_id])
            count += any(len(people) >= 2 for people in seen.values())
        return count

    def phone_address(f: Features) -> object:
        return (f.phone, f.address) if f.phone and f.address else None

    def name_birth(f: Features) -> object:
        return (f.name, f.birth_date) if f.name and f.birth_date else None

    twins = _groups_of_distinct_people(data, "twins")
    households = _groups_of_distinct_people(data, "households")
    namesakes = _groups_of_distinct_people(data, "namesakes")
    assert shared(twins, phone_address) >= len(twins) // 3
    assert shared(twins, lambda f: (f.family_py, f.birth_date)) >= len(twins) // 2
    assert shared(households, phone_address) >= len(households) // 3
    assert shared(namesakes, name_birth) >= 1
    assert shared(namesakes, lambda f: (f.name_key, f.birth_date)) >= len(namesakes) // 2


def test_sites_write_the_same_fields_differently(data: IdentitySet) -> None:
    dates = {r["birth_date"] for r in data.rows}
    shapes = {
        "iso": r"\d{4}-\d\d-\d\d", "compact": r"\d{8}", "slash": r"\d{4}/\d{1,2}/\d{1,2}",
        "chinese": r"\d{4}年\d{1,2}月\d{1,2}日", "excel": r"\d{4}-\d\d-\d\d 00:00:00"}
    for shape, pattern in shapes.items():
        assert any(re.fullmatch(pattern, d) for d in dates), shape
    assert {"男", "女", "M", "F", "1", "2"} <= {r["sex"] for r in data.rows}
    names = [r["name"] for r in data.rows]
    assert any(re.fullmatch(r"[A-Z]+ [A-Z][a-z]+", n) for n in names)       # 'ZHANG Wei'
    assert any(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", n) for n in names)  # 'Wei Zhang'
    split = [r for r in data.rows if r["family_name"] and r["given_name"]]
    assert split and all(not r["name"] for r in split)
    phones = [r["phone"] for r in data.rows]
    assert any(p.startswith("+86") for p in phones) and any("-" in p for p in phones)
    assert any(len(r["national_id"]) == 15 for r in data.rows)
    assert any(r["postcode"] for r in data.rows)
    # the project's preprocessing reads every format the sites write
    feats = _features(data)
    assert all(f.birth_date is not None and f.sex is not None for f in feats.values())
    assert all(f.name_forms for f in feats.values())


def test_pinyin_names_meet_character_names(data: IdentitySet) -> None:
    """A county-b record in pinyin shares name letters with the same person's other
    records (homophone noise aside)."""
    feats = _features(data)
    forms_by_person: dict[str, list[frozenset[str]]] = defaultdict(list)
    for record_id, f in feats.items():
        forms_by_person[data.truth[record_id]].append(f.name_forms)
    pinyin = [r for r in data.rows if r["site"] == "county-b"]
    met = sum(1 for r in pinyin
              if any(forms & feats[r["record_id"]].name_forms
                     for forms in forms_by_person[data.truth[r["record_id"]]]
                     if forms is not feats[r["record_id"]].name_forms))
    multi = sum(1 for r in pinyin if len(forms_by_person[data.truth[r["record_id"]]]) > 1)
    assert multi and met >= 0.8 * multi


def test_deterministic_for_a_seed(data: IdentitySet, tmp_path: Path) -> None:
    rows, truth = identity_records(2000, SEED)
    assert rows == data.rows and truth == data.truth
    other, _ = identity_records(2000, SEED + 1)
    assert other != rows
    written = write_identity_set(tmp_path, 2000, SEED)
    with open(tmp_path / "records.csv", encoding="utf-8", newline="") as fh:
        assert list(csv.DictReader(fh)) == written.rows == data.rows
    with open(tmp_path / "truth.csv", encoding="utf-8", newline="") as fh:
        assert {r["record_id"]: r["person_id"] for r in csv.DictReader(fh)} == data.truth
    assert (tmp_path / "hard_cases.json").exists()
