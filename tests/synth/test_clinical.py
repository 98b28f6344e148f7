"""Synthetic clinical data: consistent with visits, deterministic, with planted bad rows.

Read with plain sqlite3/csv, like test_generator; tests/nodes/test_sql_clinical.py reads
the same data back through the node's adapter.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from federation.synth import ConsortiumManifest, ExtraSource, generate_consortium, load_manifest
from federation.synth.clinical import DICOM_UID_ROOT
from federation.synth.writers import PACS_HEADER

SEED = 20261121
_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> ConsortiumManifest:
    return generate_consortium(tmp_path_factory.mktemp("clinical"), seed=SEED, people=300)


def _query(manifest: ConsortiumManifest, site: str, sql: str) -> list[tuple]:
    conn = sqlite3.connect(manifest.site(site).source_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _studies(manifest: ConsortiumManifest) -> list[dict[str, str]]:
    (pacs,) = manifest.site("city-1").extra_sources
    with pacs.path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lis_and_pacs_files_are_deterministic(tmp_path: Path) -> None:
    first = generate_consortium(tmp_path / "a", seed=5, people=60)
    second = generate_consortium(tmp_path / "b", seed=5, people=60)
    for site in ("city-1", "county-b"):
        (extra,) = first.site(site).extra_sources
        (again,) = second.site(site).extra_sources
        folder = extra.path if extra.path.is_dir() else extra.path.parent
        other = again.path if again.path.is_dir() else again.path.parent
        assert _digests(folder) and _digests(folder) == _digests(other)
    other_seed = generate_consortium(tmp_path / "c", seed=6, people=60)
    assert _digests(first.root / "sites/county-b/lis") \
        != _digests(other_seed.root / "sites/county-b/lis")


def test_manifest_lists_extra_sources(consortium: ConsortiumManifest) -> None:
    extras = {s.site_id: s.extra_sources for s in consortium.sites}
    root = consortium.root
    assert extras["city-1"] == (ExtraSource("pacs", root / "sites/city-1/pacs/studies.csv"),)
    assert extras["county-b"] == (ExtraSource("hl7", root / "sites/county-b/lis"),)
    assert all(not extras[s] for s in extras if s not in ("city-1", "county-b"))
    raw = json.loads((root / "consortium.json").read_text(encoding="utf-8"))
    assert raw["sites"][2]["extra_sources"] == [{"kind": "hl7", "path": "sites/county-b/lis"}]


def test_manifest_without_extra_sources_still_loads(tmp_path: Path) -> None:
    generate_consortium(tmp_path, seed=3, people=60)
    path = tmp_path / "consortium.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    for site in raw["sites"]:
        del site["extra_sources"]
    path.write_text(json.dumps(raw), encoding="utf-8")
    assert all(s.extra_sources == () for s in load_manifest(tmp_path).sites)


def test_labs_are_grouped_into_reports_and_fit_diagnoses(consortium: ConsortiumManifest) -> None:
    orphans = _query(consortium, "city-1", "SELECT COUNT(*) FROM LAB_RESULT r LEFT JOIN "
                     "LAB_MASTER m ON r.REPORT_ID = m.REPORT_ID WHERE m.REPORT_ID IS NULL")
    assert orphans == [(0,)]
    units = dict(_query(consortium, "city-1",
                        "SELECT DISTINCT REPORT_ITEM_CODE, UNITS FROM LAB_RESULT"))
    assert units["GLU"] == "mmol/L" and units["HbA1c"] == "%" and units["PRO"] is None
    texts = {r[0] for r in _query(consortium, "city-1",
                                  "SELECT RESULT FROM LAB_RESULT WHERE VALUE_TYPE = 'C'")}
    assert "阴性" in texts
    a1c = _query(consortium, "city-1", "SELECT AVG(CAST(RESULT AS REAL)) FROM LAB_RESULT r "
                 "JOIN PAT_VISIT v ON r.VISIT_ID = v.VISIT_ID WHERE REPORT_ITEM_CODE = 'HbA1c' "
                 "AND v.DIAG_DESC = '2型糖尿病'")
    assert a1c[0][0] > 6.5
    flags = {r[0] for r in _query(consortium, "city-1",
                                  "SELECT DISTINCT ABNORMAL_INDICATOR FROM LAB_RESULT")}
    assert {"H", None} <= flags


def test_orders_treat_the_diagnosis(consortium: ConsortiumManifest) -> None:
    rows = _query(consortium, "county-a", "SELECT v.DIAG_DESC, o.ORDER_TEXT FROM ORDERS o "
                  "JOIN PAT_VISIT v ON o.VISIT_ID = v.VISIT_ID")
    by_dx = defaultdict(set)
    for dx, drug in rows:
        by_dx[dx].add(drug)
    assert "二甲双胍片" in by_dx["2型糖尿病"]
    assert "氨氯地平片" in by_dx["原发性高血压"]
    penicillin = _query(consortium, "county-a", "SELECT COUNT(*) FROM ORDERS o JOIN "
                        "PAT_ALLERGY a ON o.PATIENT_ID = a.PATIENT_ID WHERE "
                        "a.ALLERGEN = '青霉素' AND o.ORDER_TEXT = '阿莫西林胶囊'")
    assert penicillin == [(0,)]


def test_discharge_summaries_cover_finished_stays(consortium: ConsortiumManifest) -> None:
    rows = _query(consortium, "city-1", "SELECT v.VISIT_ID, v.DIAG_DESC, d.CONTENT FROM "
                  "PAT_VISIT v LEFT JOIN MR_DISCHARGE_SUMMARY d ON d.VISIT_ID = v.VISIT_ID "
                  "WHERE v.VISIT_TYPE = 'I' AND v.DISCHARGE_DATE_TIME IS NOT NULL")
    assert rows and all(content and dx in content for _, dx, content in rows)
    assert all(c.startswith("出院小结") for *_, c in rows)


def test_allergies_are_a_small_fraction(consortium: ConsortiumManifest) -> None:
    (patients,) = _query(consortium, "city-1", "SELECT COUNT(*) FROM PAT_MASTER_INDEX")[0]
    (allergic,) = _query(consortium, "city-1",
                         "SELECT COUNT(DISTINCT PATIENT_ID) FROM PAT_ALLERGY")[0]
    assert 0 < allergic < 0.2 * patients


def test_vendor_b_vitals_use_its_formats_and_one_date_is_impossible(
        consortium: ConsortiumManifest) -> None:
    stamps = [r[0] for r in _query(consortium, "county-b", "SELECT clsj FROM t_tzjl")]
    assert all(re.fullmatch(r"\d{12}", s) for s in stamps)
    assert sum(s[4:6] == "13" for s in stamps) == 1
    names = {r[0] for r in _query(consortium, "county-b", "SELECT DISTINCT xmmc FROM t_tzjl")}
    assert {"血压", "心率"} <= names


def test_pacs_study_list_is_dicom_shaped(consortium: ConsortiumManifest) -> None:
    (pacs,) = consortium.site("city-1").extra_sources
    assert pacs.path.read_bytes().startswith(b"\xef\xbb\xbf")
    studies = _studies(consortium)
    assert studies and tuple(studies[0]) == PACS_HEADER
    uids = [s["StudyInstanceUID"] for s in studies]
    assert len(set(uids)) == len(uids)
    assert all(_UID.fullmatch(u) and len(u) <= 64 and u.startswith(DICOM_UID_ROOT)
               for u in uids)
    assert all("^" in s["PatientName"] and s["PatientSex"] in "MF" for s in studies)
    assert all(re.fullmatch(r"\d{6}", s["StudyTime"]) for s in studies)
    bad = [s for s in studies if s["StudyDate"][4:] == "0231"]
    assert len(bad) == 1


def test_studies_fit_the_visit_diagnosis(consortium: ConsortiumManifest) -> None:
    dx = dict(_query(consortium, "city-1", "SELECT VISIT_ID, DIAG_DESC FROM PAT_VISIT"))
    fits = {"脑梗死": {"CT", "MR"}, "桡骨远端骨折": {"DX"}, "右肺上叶腺癌": {"CT"},
            "肺炎": {"DX", "CT"}}
    seen = 0
    for s in _studies(consortium):
        expected = fits.get(dx[s["AdmissionID"]])
        if expected:
            seen += 1
            assert s["ModalitiesInStudy"] in expected
    assert seen >= 3


def test_lis_feed_has_daily_batches_and_two_bad_messages(consortium: ConsortiumManifest) -> None:
    (lis,) = consortium.site("county-b").extra_sources
    batches = sorted(p.name for p in lis.path.glob("oru-2*.hl7"))
    assert batches and all(re.fullmatch(r"oru-\d{8}\.hl7", b) for b in batches)
    messages = [m for m in (lis.path / "oru-bad.hl7").read_bytes().decode().split("\n")
                if m]
    assert len(messages) == 2
    truncated, not_numeric = (m.split("\r") for m in messages)
    assert truncated[-1].startswith("PID|") and len(truncated) == 2
    assert not any(s.startswith("OBR") for s in truncated)
    obx = [s.split("|") for s in not_numeric if s.startswith("OBX")]
    assert obx[0][2] == "NM" and not re.fullmatch(r"[-+]?\d+(\.\d+)?", obx[0][5])
    # county-b's own database holds no laboratory tables: its results come this way
    tables = {r[0] for r in _query(consortium, "county-b",
                                   "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any("lab" in t.lower() or "jy" in t for t in tables)
