"""Comparisons, guards and blocking for the cases the benchmarks showed: names in the wrong
columns, pinyin twins, identifier typos, and guards learnt from the data."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from federation.identity.blocking import block_keys
from federation.identity.bulk import link_rows
from federation.identity.compare import FIELDS, NULL, compare
from federation.identity.features import extract
from federation.identity.model import ALL_GUARDS, LinkageModel, learn_guards

FAMILY, GIVEN = FIELDS.index("family"), FIELDS.index("given")
OTHER_ID = FIELDS.index("other_id")


def _levels(**fixed: int) -> tuple[int, ...]:
    out = [NULL] * len(FIELDS)
    for name, level in fixed.items():
        out[FIELDS.index(name)] = level
    return tuple(out)


def test_name_written_into_the_wrong_columns_meets_the_right_one() -> None:
    right = extract({"family_name": "dakin", "given_name": "joselyn"})
    swapped = extract({"family_name": "joselyn", "given_name": "dakin"})
    assert compare(right, swapped)[:2] == (3, 4)
    assert compare(swapped, right)[:2] == (3, 4)
    chinese = compare(extract({"family_name": "陈", "given_name": "伟华"}),
                      extract({"family_name": "伟华", "given_name": "陈"}))
    assert chinese[:2] == (3, 4)


def test_pinyin_twins_share_a_surname_not_a_given_name() -> None:
    # 'ZHANG Jiejing' / 'ZHANG Zhitao' could align as given names 'zhang' = 'zhang';
    # the surname must win, so the given names stay in conflict (the twins' guard)
    a, b = extract({"name": "ZHANG Jiejing"}), extract({"name": "ZHANG Zhitao"})
    levels = compare(a, b)
    assert levels[FAMILY] >= 2 and levels[GIVEN] == 0


@pytest.mark.parametrize(("x", "y", "level"), [
    ("4086030", "4086300", 1),      # neighbours swapped
    ("4086030", "4086031", 1),      # one changed
    ("4086030", "408603", 1),       # one dropped
    ("4086030", "4806300", 0),      # more than one edit
    ("4086030", "4086030", 2),
])
def test_other_identifier_typos(x: str, y: str, level: int) -> None:
    a, b = extract({"other_id": x}), extract({"other_id": y})
    assert compare(a, b)[OTHER_ID] == level
    shares_a_key = bool(set(block_keys(a)) & set(block_keys(b)))
    assert shares_a_key == (level > 0)


def test_short_other_identifiers_make_no_typo_keys() -> None:
    kinds = [k for k, _ in block_keys(extract({"other_id": "A12"}))]
    assert kinds == ["oi"]


def test_a_shared_personal_identifier_lifts_the_given_name_guard() -> None:
    model = LinkageModel.default()
    twin_like = _levels(family=3, given=0, birth_date=3, sex=1, address=3, phone=2)
    assert "given-name-conflict" in model.guards(twin_like)
    same_card = _levels(family=3, given=0, birth_date=3, sex=1, address=3, phone=2, other_id=2)
    assert "given-name-conflict" not in model.guards(same_card)
    near_card = _levels(family=3, given=0, birth_date=3, sex=1, address=3, phone=2, other_id=1)
    assert "given-name-conflict" in model.guards(near_card)   # twins' cards may be 1 apart
    # a different resident ID with a conflicting given name is a different person
    twins_with_ids = _levels(family=3, given=0, birth_date=3, national_id=0, phone=2)
    assert model.decide(model.score_levels(twins_with_ids)) == "new"


def test_a_weak_field_does_not_corroborate() -> None:
    model = LinkageModel.default()
    i = FIELDS.index("postcode")
    town_postcode = _levels(family=3, given=4, birth_date=3, sex=1, postcode=2)
    if model._bits[i][2] < 4.0:     # the default model: one postcode per town
        assert "uncorroborated" in model.guards(town_postcode)
    same_phone = _levels(family=3, given=4, birth_date=3, sex=1, phone=2)
    assert "uncorroborated" not in model.guards(same_phone)


def test_guards_are_learnt_from_pairs_whose_ids_prove_them_different() -> None:
    bits = LinkageModel.default()._bits
    twins = _levels(family=3, given=0, birth_date=3, sex=0, national_id=0, phone=2, address=3)
    namesakes = _levels(family=3, given=4, birth_date=3, sex=1, national_id=0)
    kinds = 1
    no_ids = {(kinds, _levels(family=3, given=0, birth_date=3, phone=2)): 50}
    on, evidence = learn_guards(no_ids, bits)
    assert on == {"id-conflict"}
    assert evidence["given-name-conflict"] == {"different_ids": 0, "same_id": 0}
    on, evidence = learn_guards({(kinds, twins): 3, (kinds, namesakes): 2}, bits)
    assert on == {"id-conflict", "given-name-conflict"}
    assert evidence["uncorroborated"]["different_ids"] == 2
    on, _ = learn_guards({(kinds, twins): 3, (kinds, namesakes): 3}, bits)
    assert on == ALL_GUARDS


def test_guards_survive_the_model_file_and_old_files_keep_all() -> None:
    model = LinkageModel.default()
    model.guards_on = frozenset({"id-conflict"})
    again = LinkageModel.from_json(model.as_json())
    assert again.guards_on == {"id-conflict"}
    old = model.as_json()
    del old["guards"]
    assert LinkageModel.from_json(old).guards_on == ALL_GUARDS
    bad = {**model.as_json(), "guards": ["id-conflict", "vibes"]}
    with pytest.raises(Exception, match="unknown guards"):
        LinkageModel.from_json(bad)


def _latin_population(rng: random.Random, people: int) -> list[dict[str, str]]:
    """FEBRL-like records: Latin names, a social-security-like other id, no resident ID;
    every person twice, the copy with a swapped name, a transposed id or a new given
    name."""
    first = ["anna", "ben", "chloe", "dylan", "emma", "finn", "grace", "harry", "isla",
             "jack", "kate", "liam", "mia", "noah", "olivia", "paul", "ruby", "sam"]
    last = ["smith", "jones", "brown", "taylor", "wilson", "white", "walker", "green",
            "hall", "wood", "clarke", "king", "baker", "hill", "young", "ward"]
    rows = []
    for p in range(people):
        fam, giv = rng.choice(last), rng.choice(first)
        born = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(25000))
        oid = f"{rng.randrange(10**6, 10**7)}"
        street = f"{rng.randrange(1, 300)} {rng.choice(last)} street"
        base = {"site": "A", "record_id": f"a{p}", "family_name": fam, "given_name": giv,
                "birth_date": f"{born:%Y%m%d}", "other_id": oid, "address": street}
        dup = dict(base, site="B", record_id=f"b{p}")
        roll = p % 3
        if roll == 0:
            dup["family_name"], dup["given_name"] = giv, fam
        elif roll == 1:
            dup["other_id"] = oid[:3] + oid[4] + oid[3] + oid[5:]
        else:
            dup["given_name"] = rng.choice([f for f in first if f != giv])
        rows += [base, dup]
    return rows


def test_latin_data_without_resident_ids_links_through_its_own_evidence() -> None:
    rows = _latin_population(random.Random(7), 700)
    result = link_rows(rows)
    person = dict(result.assignments())
    assert result.model.guards_on == {"id-conflict"}    # no IDs: no evidence of twins
    linked = sum(person[f"a{p}"] == person[f"b{p}"] for p in range(700))
    assert linked >= 0.97 * 700
    persons = {}
    for rid, pid in person.items():
        persons.setdefault(pid, set()).add(rid[1:])
    assert all(len(members) == 1 for members in persons.values())  # never two people
