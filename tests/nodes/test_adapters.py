"""Site adapters against the synthetic consortium and hand-made broken sources."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from federation.errors import ConfigError, SourceError
from federation.nodes.adapters import (
    CompositeAdapter,
    CsvAdapter,
    SourceAdapter,
    SqlAdapter,
    open_adapter,
    open_sources,
)
from federation.nodes.adapters.normalise import fold_name, upgrade_resident_id
from federation.nodes.model import PatientQuery, PatientRecord
from federation.synth import ConsortiumManifest, SiteSpec, generate_consortium
from federation.synth.noise import SIMPLIFIED_TO_TRADITIONAL, to_traditional

TRADITIONAL = set(SIMPLIFIED_TO_TRADITIONAL.values())
SITES = ("city-1", "county-a", "county-b", "township-a1", "township-a2", "township-b1")


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> ConsortiumManifest:
    return generate_consortium(tmp_path_factory.mktemp("consortium"), seed=20261121, people=300)


@pytest.fixture(scope="module")
def truth(consortium: ConsortiumManifest) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {s: {} for s in SITES}
    with consortium.truth_path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            out[row["site_id"]][row["local_patient_id"]] = row["person_id"]
    return out


def _open(spec: SiteSpec) -> SourceAdapter:
    return open_sources(spec.source_settings())


@pytest.fixture(params=SITES)
def site(request: pytest.FixtureRequest, consortium: ConsortiumManifest
         ) -> Iterator[tuple[SiteSpec, SourceAdapter, list[PatientRecord]]]:
    spec = consortium.site(request.param)
    adapter = _open(spec)
    records = [adapter.get_patient(i) for i in adapter.iter_patient_ids()]
    yield spec, adapter, [r for r in records if r is not None]
    adapter.close()


def _found(adapter: SourceAdapter, query: PatientQuery) -> set[str]:
    return {r.local_id for r in adapter.search_patients(query)}


def _everyone(adapter: SourceAdapter) -> list[PatientRecord]:
    """Every readable patient, through search (gender is known for all generated rows)."""
    return [r for g in ("male", "female", "unknown")
            for r in adapter.search_patients(PatientQuery(gender=g, limit=10_000))]


# ----------------------------------------------------------------- against the truth


def test_every_truth_row_is_readable(site, truth) -> None:
    spec, adapter, records = site
    his = adapter.sources[0] if isinstance(adapter, CompositeAdapter) else adapter
    assert isinstance(his, SqlAdapter if spec.source_kind == "sql" else CsvAdapter)
    assert {r.local_id for r in records} == set(truth[spec.site_id])
    # the LIS and PACS feeds name no patient the HIS does not know
    assert adapter.count_patients() == len(truth[spec.site_id])
    assert his.quarantine == []
    assert all(r.birth_date is not None and r.gender in ("male", "female") for r in records)


def test_finds_a_known_person_by_resident_id(site) -> None:
    _, adapter, records = site
    rec = next(r for r in records if r.resident_id and len(r.resident_id) == 18)
    assert rec.local_id in _found(adapter, PatientQuery(identifier=rec.resident_id))
    assert rec.local_id in _found(adapter, PatientQuery(identifier=rec.resident_id.lower()))
    assert _found(adapter, PatientQuery(identifier=rec.local_id)) == {rec.local_id}


def test_legacy_15_digit_ids_are_found_by_their_18_digit_form(consortium) -> None:
    kinds = set()
    for spec in consortium.sites:
        with _open(spec) as adapter:
            for rec in _everyone(adapter):
                if rec.resident_id and len(rec.resident_id) == 15:
                    upgraded = upgrade_resident_id(rec.resident_id)
                    assert rec.local_id in _found(adapter, PatientQuery(identifier=upgraded))
                    kinds.add(spec.source_kind)
    assert kinds == {"sql", "csv"}


def test_finds_by_phone_written_with_country_code(site) -> None:
    _, adapter, records = site
    rec = next(r for r in records if r.phone and len(r.phone) == 11)
    p = rec.phone
    for typed in (f"+86 {p[:3]} {p[3:7]} {p[7:]}", f"0086-{p}", f"{p[:3]}-{p[3:7]}-{p[7:]}"):
        assert rec.local_id in _found(adapter, PatientQuery(phone=typed))


def test_finds_by_name_across_traditional_and_simplified(consortium) -> None:
    hits = 0
    for spec in consortium.sites:
        with _open(spec) as adapter:
            for rec in _everyone(adapter):
                if any(c in TRADITIONAL for c in rec.name):       # written traditionally
                    simplified = fold_name(rec.name)
                    assert simplified != rec.name.replace(" ", "")
                    assert rec.local_id in _found(adapter, PatientQuery(name=simplified))
                    hits += 1
    assert hits >= 3
    with _open(consortium.site("city-1")) as adapter:
        rec = next(r for r in adapter.search_patients(PatientQuery(gender="female"))
                   if to_traditional(r.name) != r.name)
        assert rec.local_id in _found(adapter, PatientQuery(name=to_traditional(rec.name)))


def test_name_substring_birth_date_and_gender_all_must_match(site) -> None:
    _, adapter, records = site
    rec = records[len(records) // 2]
    query = PatientQuery(name=rec.given, birth_date=rec.birth_date, gender=rec.gender)
    found = adapter.search_patients(query)
    assert rec.local_id in {r.local_id for r in found}
    assert all(r.birth_date == rec.birth_date and r.gender == rec.gender for r in found)
    other = "female" if rec.gender == "male" else "male"
    assert rec.local_id not in _found(adapter, PatientQuery(name=rec.name, gender=other))
    assert len(adapter.search_patients(PatientQuery(gender=rec.gender, limit=3))) == 3
    assert adapter.search_patients(PatientQuery(gender=rec.gender, limit=0)) == []


def test_encounters_are_ordered_and_normalised(site) -> None:
    _, adapter, records = site
    total = 0
    for rec in records:
        visits = adapter.encounters(rec.local_id)
        assert 1 <= len(visits) <= 6
        assert [v.start for v in visits] == sorted(v.start for v in visits)
        for v in visits:
            assert v.patient_local_id == rec.local_id
            assert v.end is None or v.end >= v.start
            assert v.status == ("in-progress" if v.kind == "inpatient" and v.end is None
                                else "finished")
        total += len(visits)
    assert adapter.encounters("no-such-patient") == []
    assert adapter.get_patient("no-such-patient") is None
    assert total >= len(records)


# ----------------------------------------------------------------- read-only


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("site_id", ["county-b", "township-a2"])
def test_adapters_never_write_the_source(consortium, site_id: str) -> None:
    spec = consortium.site(site_id)
    folder = spec.source_path if spec.source_path.is_dir() else spec.source_path.parent
    before = _fingerprint(folder)
    with _open(spec) as adapter:
        for rec in adapter.search_patients(PatientQuery(name="王", limit=100)):
            adapter.encounters(rec.local_id)
            adapter.clinical(rec.local_id)
        adapter.search_patients(PatientQuery(identifier="110101196001020011"))
        list(adapter.iter_patient_ids())
        adapter.count_patients()
    assert _fingerprint(folder) == before


def test_sql_connection_refuses_writes(consortium) -> None:
    with open_adapter("sql", consortium.site("city-1").source_path, "vendor_a") as adapter:
        assert isinstance(adapter, SqlAdapter)
        with adapter._engine.connect() as conn, pytest.raises(OperationalError):
            conn.exec_driver_sql("DELETE FROM PAT_VISIT")


# ----------------------------------------------------------------- broken sources


def test_malformed_sql_rows_are_quarantined_without_patient_data(
        consortium, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "his.sqlite"
    shutil.copy(consortium.site("county-b").source_path, db)
    conn = sqlite3.connect(db)
    bad_date, bad_sex, good = (str(r[0]) for r in conn.execute(
        "SELECT hzid FROM t_hzxx ORDER BY hzid LIMIT 3"))
    secret = conn.execute("SELECT xm, sfzh, lxdh FROM t_hzxx WHERE hzid = ?",
                          (bad_date,)).fetchone()
    conn.execute("UPDATE t_hzxx SET csrq = '19621345' WHERE hzid = ?", (bad_date,))
    conn.execute("UPDATE t_hzxx SET xb = 7 WHERE hzid = ?", (bad_sex,))
    conn.execute("UPDATE t_jzjl SET jzsj = 'yesterday' WHERE hzid = ?", (good,))
    conn.commit()
    conn.close()
    caplog.set_level(logging.WARNING)
    with open_adapter("sql", db, "vendor_b") as adapter:
        everyone = _everyone(adapter)
        assert bad_date not in {r.local_id for r in everyone}
        assert adapter.get_patient(bad_date) is None and adapter.get_patient(bad_sex) is None
        assert adapter.get_patient(good) is not None and adapter.encounters(good) == []
        assert adapter.count_patients() == len(everyone) + 2
        keys = dict(adapter.quarantine)
    visit_keys = [k for k in keys if k.startswith("visit:")]
    assert visit_keys and set(keys) == {bad_date, bad_sex, *visit_keys}
    assert "calendar date" in keys[bad_date] and "gender" in keys[bad_sex]
    text = caplog.text + repr(keys)
    assert bad_date in caplog.text
    for value in secret:
        assert value and value not in text


def _write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8-sig") -> None:
    path.write_bytes("\r\n".join(",".join(r) for r in rows).encode(encoding) + b"\r\n")


def test_malformed_csv_rows_are_quarantined(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    _write_csv(tmp_path / "patients.csv", [
        ["档案号", "姓名", "性别", "出生日期", "身份证号", "联系电话", "家庭住址"],
        ["T1", "陳麗華", "女", "1962年3月5日", "532323620305002", "+86 138 1234 5678", "x村"],
        ["T2", "王伟", "男", "1962-13-45", "", "", ""],
        ["T3", "", "男", "1970/01/02", "", "", ""],
        [",,,,,,"],
        ["T4", "李四", "男", "19700102", "", "", "", "extra", "cells"],
        ["T1", "张三", "男", "19700102", "", "", ""],
        ["T5", "欧阳 明", "未知", "1980-1-2", "", "", ""],
    ])
    _write_csv(tmp_path / "visits.csv", [
        ["就诊编号", "档案号", "就诊类型", "就诊日期", "科室", "诊断", "诊断编码"],
        ["V1", "T1", "门诊", "2023-3-5 9:05", "内科", "高血压", "I10"],
        ["V2", "T1", "会诊", "2023-3-6", "内科", "", ""],
        ["V3", "T1", "住院", "2023年3月7日", "内科", "肺炎", "J18.9"],
    ])
    caplog.set_level(logging.WARNING)
    with open_adapter("csv", tmp_path) as adapter:
        assert sorted(adapter.iter_patient_ids()) == ["T1", "T1", "T2", "T3", "T5"]
        assert adapter.count_patients() == 6
        rec = adapter.get_patient("T1")
        assert rec is not None and rec.name == "陳麗華" and rec.phone == "13812345678"
        assert rec.birth_date == dt.date(1962, 3, 5) and rec.resident_id == "532323620305002"
        assert _found(adapter, PatientQuery(name="陈丽华")) == {"T1"}
        assert _found(adapter, PatientQuery(identifier=upgrade_resident_id("532323620305002"))) \
            == {"T1"}
        t5 = adapter.get_patient("T5")
        assert t5 is not None and (t5.family, t5.given, t5.gender) == ("欧阳", "明", "unknown")
        assert [v.local_id for v in adapter.encounters("T1")] == ["V1", "V3"]
        assert adapter.encounters("T1")[1].status == "in-progress"
        reasons = dict(adapter.quarantine)
    assert set(reasons) == {"T2", "T3", "patients.csv:6", "patients.csv:7", "visit:V2"}
    assert "blank" in reasons["T3"] and "calendar date" in reasons["T2"]
    assert "duplicate" in reasons["patients.csv:7"] and "cells" in reasons["patients.csv:6"]
    for secret in ("王伟", "李四", "1962-13-45", "13812345678"):
        assert secret not in caplog.text


def test_csv_in_gb18030_with_other_headers_and_reload(tmp_path: Path) -> None:
    rows = [["编号", "患者姓名", "出生年月日", "性别", "证件号码", "手机号码", "现住址"],
            ["B1", "张靜", "19620305", "女", "532323196203050029", "13812345678", "白沙乡"]]
    _write_csv(tmp_path / "patients.csv", rows, encoding="gb18030")
    adapter = CsvAdapter(tmp_path / "patients.csv")
    assert _found(adapter, PatientQuery(name="张静", phone="138 1234 5678")) == {"B1"}
    assert adapter.encounters("B1") == []
    rows.append(["B2", "刘军", "1990-1-1", "男", "", "", ""])
    _write_csv(tmp_path / "patients.csv", rows, encoding="gb18030")
    assert adapter.get_patient("B2") is not None and adapter.count_patients() == 2


def test_a_csv_without_the_required_columns_is_a_source_error(tmp_path: Path) -> None:
    _write_csv(tmp_path / "patients.csv", [["序号", "备注"], ["1", "x"]])
    with pytest.raises(SourceError, match="姓名"):
        CsvAdapter(tmp_path)


# ----------------------------------------------------------------- configuration


def test_a_new_vendor_is_a_toml_file(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE people (pid TEXT, surname TEXT, forename TEXT, full TEXT, g TEXT, dob TEXT);
        INSERT INTO people VALUES ('k1', '司马', '光', '司马光', 'M', '05/03/1962');
        CREATE TABLE visits (vid TEXT, pid TEXT, t TEXT, at TEXT);
        INSERT INTO visits VALUES ('v1', 'k1', 'OP', '05/03/2024 08:30');
    """)
    conn.commit()
    conn.close()
    mapping = tmp_path / "vendor_c.toml"
    mapping.write_text("""
        vendor = "vendor_c"
        [patients]
        table = "people"
        values.gender = { M = "male", F = "female" }
        formats.birth_date = "%d/%m/%Y"
        [patients.columns]
        local_id = "pid"
        name = "full"
        family = "surname"
        given = "forename"
        gender = "g"
        birth_date = "dob"
        [encounters]
        table = "visits"
        columns = { local_id = "vid", patient_local_id = "pid", kind = "t", start = "at" }
        values.kind = { OP = "outpatient" }
        formats.start = ["%d/%m/%Y %H:%M"]
    """, encoding="utf-8")
    with open_adapter("sql", db, mapping) as adapter:
        [rec] = adapter.search_patients(PatientQuery(birth_date=dt.date(1962, 3, 5)))
        assert (rec.family, rec.given, rec.gender) == ("司马", "光", "male")
        assert adapter.encounters("k1")[0].start == dt.datetime(2024, 3, 5, 8, 30)


def test_configuration_errors_name_the_problem(consortium, tmp_path: Path) -> None:
    his = consortium.site("city-1").source_path
    with pytest.raises(ConfigError, match="vendor_a"):
        open_adapter("sql", his, "vendor_z")
    with pytest.raises(ConfigError, match="needs a mapping"):
        open_adapter("sql", his)
    with pytest.raises(ConfigError, match="unknown source kind"):
        open_adapter("dicomweb", his, "vendor_a")
    with pytest.raises(SourceError, match="no table 't_hzxx'"):
        open_adapter("sql", his, "vendor_b")                         # wrong vendor's mapping
    with pytest.raises(SourceError, match="does not exist"):
        open_adapter("sql", tmp_path / "missing.sqlite", "vendor_a")
    assert not (tmp_path / "missing.sqlite").exists()             # ro mode creates nothing
