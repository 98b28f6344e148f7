"""A large synthetic demographics set with ground truth, for measuring EMPI accuracy.

The same people, sites and noise as the synthetic consortium (:mod:`.people`,
:mod:`.noise`, the site list and site assignment of :mod:`.generator`), but only the
demographics, in the batch EMPI's input columns
(:data:`federation.identity.features.INPUT_COLUMNS`), and many more of them: 100,000
records generate in a few seconds.

On top of the per-appearance noise, each site writes records the way its vendor does
(real systems differ; the EMPI's preprocessing must bring them to one form):

===========  ==========================  ======================  ========  ================
site         name                        birth date              sex       also
===========  ==========================  ======================  ========  ================
city-1       one field, characters       YYYY-MM-DD (10 %        男/女      postcode
                                         YYYY/M/D)
county-a     family_name + given_name    YYYYMMDD                M/F       postcode
county-b     pinyin only: 'ZHANG Wei'    YYYY/M/D                1/2       phones '+86 …',
             (70 %) or 'Wei Zhang'                                         ID 'x' lower case
township-a1  one field, characters       YYYY年M月D日            男/女
township-a2  one field, characters       YYYYMMDD or YYYY-MM-DD  1/2       phones with dashes
township-b1  family_name + given_name    YYYY-MM-DD 00:00:00     男/女
===========  ==========================  ======================  ========  ================

A person registered twice at the same site (a duplicate local record, the EMPI's most
common case) happens for ``DUPLICATE_RATE`` of appearances, each drawn with fresh noise.
The planted hard cases of :func:`~federation.synth.people.make_population` are kept:
twins (same surname, birth date, phone and address), households sharing a phone and an
address, and same-name-same-birth-date strangers; ``IdentitySet.hard_cases`` lists
them as groups of *record* ids of different people.

Truth is ``record_id → person_id``: records with the same person id are the same
person. Everything is drawn from ``random.Random`` streams derived from the seed.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from pypinyin import Style, lazy_pinyin

from federation.identity.features import INPUT_COLUMNS
from federation.synth.generator import _ID_STYLE, SITES, _assign_sites, _local_ids
from federation.synth.noise import Appearance, NoiseLog, NoiseRates, apply_noise
from federation.synth.people import Person, make_population

__all__ = ["DEFAULT_SEED", "DUPLICATE_RATE", "IdentitySet", "build_identity_set",
           "identity_records", "write_identity_set"]

DEFAULT_SEED = 20261122
#: share of appearances registered a second time at the same site
DUPLICATE_RATE = 0.03
#: appearances per person that the consortium's site assignment gives (measured: ~1.60)
_APPEARANCES_PER_PERSON = 1.60 * (1 + DUPLICATE_RATE)
# Postcodes by residence area (fictional; one per town, as Chinese postcodes are).
_POSTCODE = {"city-1": "661000", "county-a": "661100", "county-b": "661200",
             "township-a1": "661104", "township-a2": "661107", "township-b1": "661203"}


@dataclass(frozen=True, slots=True)
class IdentitySet:
    #: records in :data:`INPUT_COLUMNS` (every column present, blanks as '')
    rows: list[dict[str, str]]
    #: record id → true person id
    truth: dict[str, str]
    #: planted hard cases ('twins', 'households', 'namesakes'): groups of record ids,
    #: each group spanning two or more different people
    hard_cases: dict[str, list[list[str]]]
    people: int
    seed: int


def identity_records(records: int = 100_000, seed: int = DEFAULT_SEED
                     ) -> tuple[list[dict[str, str]], dict[str, str]]:
    """``records`` rows in the batch CLI's input columns and record id → true person id."""
    data = build_identity_set(records, seed)
    return data.rows, data.truth


def build_identity_set(records: int = 100_000, seed: int = DEFAULT_SEED) -> IdentitySet:
    """Exactly ``records`` records (at least 40) of the synthetic prefecture's residents."""
    records = max(records, 40)
    people = int(records / _APPEARANCES_PER_PERSON * 1.06) + 20
    while True:
        population = make_population(random.Random(f"{seed}:people"), people)
        presence = _assign_sites(random.Random(f"{seed}:sites"), population)
        appearances = _appearances(seed, population.people, presence)
        if len(appearances) >= records:
            break
        people = int(people * 1.2) + 10
    hard_people = {pid for groups in population.hard_cases.values()
                   for group in groups for pid in group}
    appearances = _trim(random.Random(f"{seed}:trim"), appearances, records, hard_people)
    by_person = {p.person_id: p for p in population.people}
    rows: list[dict[str, str]] = []
    truth: dict[str, str] = {}
    for site_id, *_ in SITES:
        mine = [a for a in appearances if a.site_id == site_id]
        rng = random.Random(f"{seed}:format:{site_id}")
        rng.shuffle(mine)                    # local ids must not follow person order
        ids = _local_ids(rng, _ID_STYLE[site_id], len(mine))
        for local_id, app in zip(ids, mine, strict=True):
            record_id = f"{site_id}:{local_id}"
            rows.append(_format(rng, record_id, app, by_person[app.person_id]))
            truth[record_id] = app.person_id
    random.Random(f"{seed}:order").shuffle(rows)
    records_of: dict[str, list[str]] = {}
    for record_id, person_id in truth.items():
        records_of.setdefault(person_id, []).append(record_id)
    hard: dict[str, list[list[str]]] = {}
    for kind, groups in population.hard_cases.items():
        hard[kind] = []
        for group in groups:
            present = [pid for pid in group if pid in records_of]
            if len(present) >= 2:
                hard[kind].append(sorted(r for pid in present for r in records_of[pid]))
    return IdentitySet(rows=rows, truth=truth, hard_cases=hard,
                       people=len(records_of), seed=seed)


def write_identity_set(out_dir: Path | str, records: int = 100_000,
                       seed: int = DEFAULT_SEED) -> IdentitySet:
    """Write ``records.csv`` (the CLI's input), ``truth.csv`` (record_id, person_id) and
    ``hard_cases.json`` under ``out_dir``; return the set."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    data = build_identity_set(records, seed)
    with open(root / "records.csv", "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, INPUT_COLUMNS, lineterminator="\n")
        out.writeheader()
        out.writerows(data.rows)
    with open(root / "truth.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("record_id", "person_id"))
        writer.writerows(sorted(data.truth.items()))
    (root / "hard_cases.json").write_text(
        json.dumps({"seed": seed, "records": len(data.rows), "people": data.people,
                    "hard_cases": data.hard_cases}, indent=1) + "\n", encoding="utf-8")
    return data


# ------------------------------------------------------------------------------ internals

def _appearances(seed: int, people: tuple[Person, ...], presence: dict[str, list[str]]
                 ) -> list[Appearance]:
    rates, log = NoiseRates(), NoiseLog()
    seen: list[Appearance] = []
    for site_id, _name, tier, _parent, _writer in SITES:
        members = [p for p in people if site_id in presence[p.person_id]]
        noise_rng = random.Random(f"{seed}:noise:{site_id}")
        seen += [apply_noise(noise_rng, p, site_id, tier, rates, log) for p in members]
        dup_rng = random.Random(f"{seed}:duplicates:{site_id}")
        again = [p for p in members if dup_rng.random() < DUPLICATE_RATE]
        seen += [apply_noise(dup_rng, p, site_id, tier, rates, log) for p in again]
    return seen


def _trim(rng: random.Random, appearances: list[Appearance], records: int,
          keep: set[str]) -> list[Appearance]:
    """Exactly ``records`` appearances, dropping only those of people outside the hard
    cases."""
    excess = len(appearances) - records
    if excess <= 0:
        return appearances
    droppable = [i for i, a in enumerate(appearances) if a.person_id not in keep]
    drop = set(rng.sample(droppable, min(excess, len(droppable))))
    kept = [a for i, a in enumerate(appearances) if i not in drop]
    return kept[:records]


def _pinyin(text: str) -> str:
    return "".join(lazy_pinyin(text, style=Style.NORMAL, errors="ignore"))


def _format(rng: random.Random, record_id: str, app: Appearance, person: Person
            ) -> dict[str, str]:
    """One appearance as its site's vendor writes it (see the module docstring)."""
    site = app.site_id
    row = dict.fromkeys(INPUT_COLUMNS, "")
    row["record_id"], row["site"] = record_id, site
    compact = "".join(app.name.split())
    cut = len(person.surname)                       # homophones keep the length
    family, given = compact[:cut], compact[cut:]
    roll = rng.random()
    b = app.birth_date
    male = app.sex == "male"
    phone = app.phone or ""
    plain = len(phone) == 11 and phone.isdigit()
    rid = app.resident_id or ""
    if site == "city-1":
        row["name"] = app.name
        row["birth_date"] = f"{b.year}/{b.month}/{b.day}" if roll < 0.1 else b.isoformat()
        row["sex"] = "男" if male else "女"
        row["postcode"] = _POSTCODE[person.home] if rng.random() < 0.9 else ""
    elif site == "county-a":
        row["family_name"], row["given_name"] = family, given
        row["birth_date"] = f"{b:%Y%m%d}"
        row["sex"] = "M" if male else "F"
        row["postcode"] = _POSTCODE[person.home] if rng.random() < 0.8 else ""
    elif site == "county-b":
        fam, giv = _pinyin(family), _pinyin(given)
        row["name"] = (f"{fam.upper()} {giv.capitalize()}" if roll < 0.7
                       else f"{giv.capitalize()} {fam.capitalize()}")
        row["birth_date"] = f"{b.year}/{b.month}/{b.day}"
        row["sex"] = "1" if male else "2"
        if plain and rng.random() < 0.5:
            phone = f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}"
        rid = rid.lower()
    elif site == "township-a1":
        row["name"] = app.name
        row["birth_date"] = f"{b.year}年{b.month}月{b.day}日"
        row["sex"] = "男" if male else "女"
    elif site == "township-a2":
        row["name"] = app.name
        row["birth_date"] = f"{b:%Y%m%d}" if roll < 0.6 else b.isoformat()
        row["sex"] = "1" if male else "2"
        if plain and rng.random() < 0.4:
            phone = f"{phone[:3]}-{phone[3:7]}-{phone[7:]}"
    else:                                           # township-b1: an Excel export
        row["family_name"], row["given_name"] = family, given
        row["birth_date"] = f"{b.isoformat()} 00:00:00"
        row["sex"] = "男" if male else "女"
    row["national_id"], row["phone"], row["address"] = rid, phone, app.address
    return row
