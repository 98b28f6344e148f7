"""The synthetic consortium: deterministic, complete ground truth, valid IDs, real noise.

Sources are read here with plain sqlite3/csv (not the node adapters), so these tests
check the generator's output itself.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from stdnum.cn import ric

from federation.errors import ConfigError
from federation.synth import ConsortiumManifest, SiteSpec, generate_consortium, load_manifest
from federation.synth.noise import SIMPLIFIED_TO_TRADITIONAL, NoiseRates
from federation.synth.writers import CSV_LAYOUTS

SEED = 20261121
TRADITIONAL = set(SIMPLIFIED_TO_TRADITIONAL.values())


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> ConsortiumManifest:
    return generate_consortium(tmp_path_factory.mktemp("consortium"), seed=SEED, people=300)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> ConsortiumManifest:
    """Enough appearances (~2,500) to test the noise rates statistically."""
    return generate_consortium(tmp_path_factory.mktemp("large"), seed=7, people=1500)


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(spec: SiteSpec) -> list[dict[str, str]]:
    """Patient rows as {field: raw text} straight from the site's files."""
    if spec.source_kind == "csv":
        header = {h: f for f, h in CSV_LAYOUTS[spec.site_id].patients}
        with (spec.source_path / "patients.csv").open(encoding="utf-8-sig", newline="") as fh:
            return [{header[k]: v for k, v in row.items()} for row in csv.DictReader(fh)]
    conn = sqlite3.connect(spec.source_path)
    try:
        if spec.mapping == "vendor_a":
            sql = ("SELECT PATIENT_ID, NAME, SEX, DATE_OF_BIRTH, ID_NO, PHONE_NO, "
                   "MAILING_ADDRESS FROM PAT_MASTER_INDEX")
            sexes = {"男": "男", "女": "女"}
        else:
            sql = "SELECT hzid, xm, xb, csrq, sfzh, lxdh, jtzz FROM t_hzxx"
            sexes = {1: "男", 2: "女"}
        return [{"local_id": str(r[0]), "name": r[1], "sex": sexes[r[2]],
                 "birth_date": r[3].replace("-", ""), "resident_id": r[4] or "",
                 "phone": r[5] or "", "address": r[6]} for r in conn.execute(sql)]
    finally:
        conn.close()


def _visit_counts(spec: SiteSpec) -> Counter[str]:
    if spec.source_kind == "csv":
        layout = dict(CSV_LAYOUTS[spec.site_id].visits)
        with (spec.source_path / "visits.csv").open(encoding="utf-8-sig", newline="") as fh:
            return Counter(row[layout["patient_local_id"]] for row in csv.DictReader(fh))
    conn = sqlite3.connect(spec.source_path)
    table, col = ("PAT_VISIT", "PATIENT_ID") if spec.mapping == "vendor_a" else ("t_jzjl", "hzid")
    try:
        return Counter(str(r[0]) for r in conn.execute(f"SELECT {col} FROM {table}"))
    finally:
        conn.close()


def _truth(manifest: ConsortiumManifest) -> dict[tuple[str, str], str]:
    with manifest.truth_path.open(encoding="utf-8", newline="") as fh:
        return {(r["site_id"], r["local_patient_id"]): r["person_id"] for r in csv.DictReader(fh)}


def _all_rows(manifest: ConsortiumManifest) -> list[tuple[SiteSpec, dict[str, str]]]:
    return [(spec, row) for spec in manifest.sites for row in _rows(spec)]


# ----------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(consortium: ConsortiumManifest, tmp_path: Path) -> None:
    again = generate_consortium(tmp_path / "again", seed=SEED, people=300)
    assert _digests(again.root) == _digests(consortium.root)


def test_other_seed_gives_other_data(consortium: ConsortiumManifest, tmp_path: Path) -> None:
    other = generate_consortium(tmp_path / "other", seed=SEED + 1, people=300)
    a, b = _digests(consortium.root), _digests(other.root)
    daily = "sites/county-b/lis/oru-2"             # LIS batches are named by issue day
    assert {k for k in a if not k.startswith(daily)} == {k for k in b if not k.startswith(daily)}
    assert a["truth.csv"] != b["truth.csv"]
    assert a["sites/city-1/his.sqlite"] != b["sites/city-1/his.sqlite"]


def test_rerun_overwrites_in_place(tmp_path: Path) -> None:
    first = generate_consortium(tmp_path, seed=3, people=60)
    before = _digests(tmp_path)
    first.truth_path.write_text("damaged")
    (tmp_path / "sites" / "county-b" / "his.sqlite").write_bytes(b"not a database")
    second = generate_consortium(tmp_path, seed=3, people=60)
    assert _digests(tmp_path) == before
    assert second == first


# ----------------------------------------------------------------- manifest


def test_manifest_describes_six_sites(consortium: ConsortiumManifest) -> None:
    by_id = {s.site_id: s for s in consortium.sites}
    assert list(by_id) == ["city-1", "county-a", "county-b", "township-a1", "township-a2",
                           "township-b1"]
    assert {s: (v.tier, v.parent_site_id, v.source_kind, v.mapping) for s, v in by_id.items()} == {
        "city-1": ("city", None, "sql", "vendor_a"),
        "county-a": ("county", "city-1", "sql", "vendor_a"),
        "county-b": ("county", "city-1", "sql", "vendor_b"),
        "township-a1": ("township", "county-a", "csv", None),
        "township-a2": ("township", "county-a", "csv", None),
        "township-b1": ("township", "county-b", "csv", None),
    }
    assert all("卫生院" in by_id[s].name for s in by_id if s.startswith("township"))
    for spec in consortium.sites:
        assert spec.source_path.is_absolute() and spec.source_path.exists()
    assert load_manifest(consortium.root) == consortium
    raw = json.loads((consortium.root / "consortium.json").read_text(encoding="utf-8"))
    assert raw["sites"][0]["source_path"] == "sites/city-1/his.sqlite"


def test_load_manifest_of_empty_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="synth generate"):
        load_manifest(tmp_path)


def test_vendor_schemas_really_differ(consortium: ConsortiumManifest) -> None:
    def tables(spec: SiteSpec) -> set[str]:
        conn = sqlite3.connect(spec.source_path)
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()

    assert tables(consortium.site("city-1")) == {
        "PAT_MASTER_INDEX", "PAT_VISIT", "LAB_MASTER", "LAB_RESULT", "VITAL_SIGNS_REC",
        "ORDERS", "PAT_ALLERGY", "MR_DISCHARGE_SUMMARY"}
    assert tables(consortium.site("county-b")) == {"t_hzxx", "t_jzjl", "t_tzjl", "t_yz",
                                                   "t_gms", "t_cyxj"}


def test_township_exports_look_like_excel(consortium: ConsortiumManifest) -> None:
    headers = set()
    for site in ("township-a1", "township-a2", "township-b1"):
        data = (consortium.site(site).source_path / "patients.csv").read_bytes()
        assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
        header = data.decode("utf-8-sig").split("\r\n", 1)[0]
        assert "性别" in header and "姓名" in header
        headers.add(header)
    assert len(headers) == 3                                      # each centre its own sheet
    births = [row["birth_date"] for spec, row in _all_rows(consortium) if spec.tier == "township"]
    assert any("-" in b and len(b) < 10 for b in births)        # 1962-3-5
    assert any("/" in b for b in births)                         # 1962/03/05
    assert any(b.isdigit() and len(b) == 8 for b in births)      # 19620305
    assert any("年" in b for b in births)                        # 1962年3月5日


# ----------------------------------------------------------------- truth and identity


def test_truth_covers_every_source_row_exactly_once(consortium: ConsortiumManifest) -> None:
    truth = _truth(consortium)
    source = {(spec.site_id, row["local_id"]) for spec, row in _all_rows(consortium)}
    assert source == set(truth)
    lines = consortium.truth_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) - 1 == len(truth)
    assert len(set(truth.values())) == 300


def test_resident_ids_are_valid_and_encode_birth_and_sex(large: ConsortiumManifest) -> None:
    rows = _all_rows(large)
    seen = Counter()
    mismatched_birth = 0
    for _, row in rows:
        rid = row["resident_id"]
        seen[len(rid)] += 1
        if len(rid) == 15:
            rid = rid[:6] + "19" + rid[6:] + ric.calc_check_digit(rid[:6] + "19" + rid[6:] + "0")
        if not rid:
            continue
        assert ric.is_valid(rid), "generated resident ID fails GB 11643"
        assert (int(rid[16]) % 2 == 1) == (row["sex"] == "男")
        encoded = ric.get_birth_date(rid).strftime("%Y%m%d")
        mismatched_birth += encoded != _compact(row["birth_date"])
    assert set(seen) == {0, 15, 18}
    assert mismatched_birth <= 0.03 * len(rows)               # the birth-day typos only


def _compact(text: str) -> str:
    for sep in ("年", "月", "/", "-"):
        text = text.replace(sep, "-")
    parts = text.rstrip("日").split("-")
    return text if len(parts) == 1 else f"{int(parts[0]):04d}{int(parts[1]):02d}{int(parts[2]):02d}"


def test_people_appear_at_one_to_four_sites(large: ConsortiumManifest) -> None:
    sites = defaultdict(set)
    for (site, _), person in _truth(large).items():
        sites[person].add(site)
    spread = Counter(len(s) for s in sites.values())
    assert set(spread) <= {1, 2, 3, 4}
    assert spread[3] + spread[4] >= 0.05 * len(sites)
    assert spread[4] >= 1


def test_every_patient_has_one_to_six_visits(consortium: ConsortiumManifest) -> None:
    for spec in consortium.sites:
        counts = _visit_counts(spec)
        ids = {row["local_id"] for row in _rows(spec)}
        assert set(counts) == ids
        assert all(1 <= n <= 6 for n in counts.values())


def test_seed_diagnosis_is_in_the_data(large: ConsortiumManifest) -> None:
    conn = sqlite3.connect(large.site("city-1").source_path)
    try:
        codes = dict(conn.execute("SELECT DIAG_DESC, DIAG_CODE FROM PAT_VISIT"))
    finally:
        conn.close()
    assert codes["左侧中央型肺鳞癌并纵膈淋巴结转移"] == "C34.900"
    assert codes["原发性高血压"] == "I10.x00"


# ----------------------------------------------------------------- noise


def test_realised_noise_matches_the_documented_rates(large: ConsortiumManifest) -> None:
    report = json.loads(large.noise_path.read_text(encoding="utf-8"))
    rates = NoiseRates().as_dict()
    assert report["rates"] == rates
    assert {k.replace(".", "_") for k in report["eligible"]} == set(rates)
    for kind, eligible in report["eligible"].items():
        rate = rates[kind.replace(".", "_")]
        applied = report["applied"].get(kind, 0)
        assert eligible >= 100, kind
        sigma = math.sqrt(eligible * rate * (1 - rate))
        assert abs(applied - eligible * rate) <= 4 * sigma + 1, (kind, applied, eligible, rate)


def test_noise_counts_are_what_the_sources_contain(large: ConsortiumManifest) -> None:
    applied = json.loads(large.noise_path.read_text(encoding="utf-8"))["applied"]
    rows = _all_rows(large)
    assert sum(any(c in TRADITIONAL for c in r["name"]) for _, r in rows) \
        == applied["traditional_chars"]
    assert sum(len(r["resident_id"]) == 15 for _, r in rows) == applied["legacy_15_digit_id"]
    assert sum(any(c in "+ -" for c in r["phone"]) for _, r in rows) == applied["phone_formatting"]
    assert sum((" " in r["name"]) or ("\u3000" in r["name"]) for _, r in rows) \
        == applied["name_spacing"]
    for tier in ("city", "county", "township"):
        blank = sum(not r["resident_id"] for s, r in rows if s.tier == tier)
        assert blank == applied[f"missing_resident_id.{tier}"]


def test_township_ids_are_mostly_but_not_always_missing(large: ConsortiumManifest) -> None:
    rows = _all_rows(large)
    share = {tier: sum(not r["resident_id"] for s, r in rows if s.tier == tier)
             / sum(1 for s, _ in rows if s.tier == tier) for tier in ("city", "township")}
    assert 0.3 < share["township"] < 0.5 and share["city"] < 0.08


# ----------------------------------------------------------------- hard cases


def _records_by_person(manifest: ConsortiumManifest) -> dict[str, list[tuple[str, dict]]]:
    truth, out = _truth(manifest), defaultdict(list)
    for spec, row in _all_rows(manifest):
        out[truth[(spec.site_id, row["local_id"])]].append((spec.site_id, row))
    return out


def test_twins_share_birth_date_address_and_phone(consortium: ConsortiumManifest) -> None:
    cases = json.loads(consortium.noise_path.read_text(encoding="utf-8"))["hard_cases"]
    assert len(cases["twins"]) >= 2
    records = _records_by_person(consortium)
    confusable = 0
    for a, b in cases["twins"]:
        assert {s for s, _ in records[a]} == {s for s, _ in records[b]}
        for (_, ra), (_, rb) in zip(sorted(records[a], key=lambda x: x[0]),
                                       sorted(records[b], key=lambda x: x[0]), strict=True):
            assert ra["name"] != rb["name"]
            if ra["birth_date"] == rb["birth_date"] and ra["phone"] == rb["phone"] != "":
                confusable += 1
    assert confusable >= 1


def test_households_share_a_phone_and_namesakes_share_name_and_birthday(
        consortium: ConsortiumManifest) -> None:
    cases = json.loads(consortium.noise_path.read_text(encoding="utf-8"))["hard_cases"]
    records = _records_by_person(consortium)
    shared = 0
    for members in cases["households"]:
        assert len(members) >= 2
        per_site = defaultdict(set)
        for person in members:
            for site, row in records[person]:
                if row["phone"]:
                    per_site[(site, row["phone"])].add(person)
        shared += any(len(p) >= 2 for p in per_site.values())
    assert shared >= 3
    same = 0
    for a, b in cases["namesakes"]:
        for site, ra in records[a]:
            same += any(s == site and rb["name"] == ra["name"] and
                        rb["birth_date"] == ra["birth_date"] for s, rb in records[b])
    assert len(cases["namesakes"]) >= 2 and same >= 1
