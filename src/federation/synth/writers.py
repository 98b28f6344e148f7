"""Write one site's source system the way its vendor (or its Excel) would.

* vendor A (city-1, county-a): ``PAT_MASTER_INDEX`` / ``PAT_VISIT``, 10-character
  string ids, sex 男/女, 'YYYY-MM-DD' dates, 'YYYY-MM-DD HH:MM:SS' times, O/I/E types.
* vendor B (county-b): ``t_hzxx`` / ``t_jzjl``, integer keys, sex per GB/T 2261.1 as
  an integer, 'YYYYMMDD' dates, 'YYYY/MM/DD HH:MM' times, 门诊/住院/急诊.
* township exports: ``patients.csv`` + ``visits.csv``, UTF-8 with BOM and CRLF as Excel
  writes them, Chinese headers that differ per centre, dates in mixed shapes.

Every file is written to a temporary name and renamed into place, so a rerun replaces
it whole; nothing time-dependent is written, so the same input gives the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CSV_LAYOUTS",
    "CsvLayout",
    "SiteRow",
    "SiteVisit",
    "write_csv_export",
    "write_text_atomic",
    "write_vendor_a",
    "write_vendor_b",
]


@dataclass(frozen=True, slots=True)
class SiteRow:
    local_id: str
    name: str
    sex: str                      # 'male' | 'female'
    birth_date: dt.date
    resident_id: str | None
    phone: str | None
    address: str
    updated_at: dt.datetime
    charge_type: str              # 医保类型, a column the mappings ignore


@dataclass(frozen=True, slots=True)
class SiteVisit:
    local_id: str
    patient_local_id: str
    kind: str                     # 'outpatient' | 'inpatient' | 'emergency'
    start: dt.datetime
    end: dt.datetime | None
    department: str
    diagnosis_text: str
    diagnosis_code: str | None


def write_text_atomic(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(text.encode(encoding))
    os.replace(tmp, path)


def _write_sqlite(path: Path, ddl: str, inserts: Sequence[tuple[str, Sequence[tuple]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(ddl)
        for sql, rows in inserts:
            conn.executemany(sql, rows)
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, path)


_VENDOR_A_DDL = """
CREATE TABLE PAT_MASTER_INDEX (
    PATIENT_ID      VARCHAR(10)  NOT NULL PRIMARY KEY,
    NAME            VARCHAR(40)  NOT NULL,
    SEX             VARCHAR(4),
    DATE_OF_BIRTH   VARCHAR(10),
    ID_NO           VARCHAR(18),
    PHONE_NO        VARCHAR(20),
    MAILING_ADDRESS VARCHAR(200),
    CHARGE_TYPE     VARCHAR(20),
    LAST_UPDATED    VARCHAR(19)
);
CREATE INDEX IDX_PMI_ID_NO ON PAT_MASTER_INDEX (ID_NO);
CREATE INDEX IDX_PMI_DOB ON PAT_MASTER_INDEX (DATE_OF_BIRTH);
CREATE TABLE PAT_VISIT (
    VISIT_ID            VARCHAR(12) NOT NULL PRIMARY KEY,
    PATIENT_ID          VARCHAR(10) NOT NULL REFERENCES PAT_MASTER_INDEX (PATIENT_ID),
    VISIT_TYPE          CHAR(1)     NOT NULL,
    ADMISSION_DATE_TIME VARCHAR(19) NOT NULL,
    DISCHARGE_DATE_TIME VARCHAR(19),
    DEPT_NAME           VARCHAR(40),
    DIAG_DESC           VARCHAR(200),
    DIAG_CODE           VARCHAR(20)
);
CREATE INDEX IDX_PV_PATIENT ON PAT_VISIT (PATIENT_ID);
"""


def write_vendor_a(path: Path, rows: Sequence[SiteRow], visits: Sequence[SiteVisit]) -> None:
    sex = {"male": "男", "female": "女"}
    kind = {"outpatient": "O", "inpatient": "I", "emergency": "E"}
    stamp = "%Y-%m-%d %H:%M:%S"
    _write_sqlite(path, _VENDOR_A_DDL, [
        ("INSERT INTO PAT_MASTER_INDEX VALUES (?,?,?,?,?,?,?,?,?)",
         [(r.local_id, r.name, sex[r.sex], r.birth_date.isoformat(), r.resident_id, r.phone,
           r.address, r.charge_type, r.updated_at.strftime(stamp)) for r in rows]),
        ("INSERT INTO PAT_VISIT VALUES (?,?,?,?,?,?,?,?)",
         [(v.local_id, v.patient_local_id, kind[v.kind], v.start.strftime(stamp),
           v.end.strftime(stamp) if v.end else None, v.department, v.diagnosis_text,
           v.diagnosis_code) for v in visits]),
    ])


_VENDOR_B_DDL = """
CREATE TABLE t_hzxx (
    hzid  INTEGER PRIMARY KEY,
    xm    TEXT NOT NULL,
    xb    INTEGER,
    csrq  CHAR(8),
    sfzh  TEXT,
    lxdh  TEXT,
    jtzz  TEXT,
    yblx  TEXT,
    gxsj  CHAR(14)
);
CREATE INDEX ix_hzxx_sfzh ON t_hzxx (sfzh);
CREATE INDEX ix_hzxx_csrq ON t_hzxx (csrq);
CREATE TABLE t_jzjl (
    jzid  INTEGER PRIMARY KEY,
    hzid  INTEGER NOT NULL,
    jzlx  TEXT NOT NULL,
    jzsj  TEXT NOT NULL,
    cysj  TEXT,
    ksdm  TEXT,
    ksmc  TEXT,
    zdmc  TEXT,
    zddm  TEXT
);
CREATE INDEX ix_jzjl_hzid ON t_jzjl (hzid);
"""


def write_vendor_b(path: Path, rows: Sequence[SiteRow], visits: Sequence[SiteVisit]) -> None:
    sex = {"male": 1, "female": 2}
    kind = {"outpatient": "门诊", "inpatient": "住院", "emergency": "急诊"}
    stamp = "%Y/%m/%d %H:%M"
    depts: dict[str, str] = {}
    for v in visits:
        depts.setdefault(v.department, f"{len(depts) + 1:03d}")
    _write_sqlite(path, _VENDOR_B_DDL, [
        ("INSERT INTO t_hzxx VALUES (?,?,?,?,?,?,?,?,?)",
         [(int(r.local_id), r.name, sex[r.sex], f"{r.birth_date:%Y%m%d}", r.resident_id,
           r.phone, r.address, r.charge_type, f"{r.updated_at:%Y%m%d%H%M%S}") for r in rows]),
        ("INSERT INTO t_jzjl VALUES (?,?,?,?,?,?,?,?,?)",
         [(int(v.local_id), int(v.patient_local_id), kind[v.kind], v.start.strftime(stamp),
           v.end.strftime(stamp) if v.end else None, depts[v.department], v.department,
           v.diagnosis_text, v.diagnosis_code) for v in visits]),
    ])


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """One centre's spreadsheet: its headers (record field → header) and date habits."""

    patients: tuple[tuple[str, str], ...]
    visits: tuple[tuple[str, str], ...]
    #: birth-date shapes staff use, with weights: 'dash' 1962-3-5, 'slash' 1962/03/05,
    #: 'compact' 19620305, 'cn' 1962年3月5日
    date_styles: tuple[tuple[str, int], ...]


CSV_LAYOUTS = {
    "township-a1": CsvLayout(
        patients=(("local_id", "档案号"), ("name", "姓名"), ("sex", "性别"),
                  ("birth_date", "出生日期"), ("resident_id", "身份证号"),
                  ("phone", "联系电话"), ("address", "家庭住址")),
        visits=(("local_id", "就诊编号"), ("patient_local_id", "档案号"), ("kind", "就诊类型"),
                ("start", "就诊日期"), ("department", "科室"), ("diagnosis_text", "诊断"),
                ("diagnosis_code", "诊断编码")),
        date_styles=(("dash", 6), ("slash", 3), ("cn", 1))),
    "township-a2": CsvLayout(
        patients=(("local_id", "编号"), ("name", "患者姓名"), ("sex", "性别"),
                  ("birth_date", "出生年月日"), ("resident_id", "身份证号码"),
                  ("phone", "手机号码"), ("address", "现住址"), ("updated_at", "更新时间")),
        visits=(("local_id", "就诊号"), ("patient_local_id", "编号"), ("kind", "就诊类别"),
                ("start", "就诊时间"), ("end", "离院时间"), ("department", "就诊科室"),
                ("diagnosis_text", "诊断名称"), ("diagnosis_code", "ICD编码")),
        date_styles=(("cn", 5), ("compact", 4), ("dash", 1))),
    "township-b1": CsvLayout(
        patients=(("local_id", "健康档案号"), ("name", "姓名"), ("birth_date", "出生日期"),
                  ("sex", "性别"), ("resident_id", "证件号码"), ("phone", "电话"),
                  ("address", "住址")),
        visits=(("local_id", "就诊流水号"), ("patient_local_id", "健康档案号"), ("kind", "类型"),
                ("start", "就诊日期"), ("department", "科室"), ("diagnosis_text", "主要诊断"),
                ("diagnosis_code", "诊断代码")),
        date_styles=(("dash", 1), ("slash", 1), ("compact", 1), ("cn", 1))),
}


def _date(day: dt.date, style: str) -> str:
    return {"dash": f"{day.year}-{day.month}-{day.day}", "slash": f"{day:%Y/%m/%d}",
            "compact": f"{day:%Y%m%d}", "cn": f"{day.year}年{day.month}月{day.day}日"}[style]


def _when(moment: dt.datetime | None, style: str) -> str:
    """Visit times: date-only in the Chinese style, with H:MM otherwise."""
    if moment is None:
        return ""
    if style == "cn":
        return _date(moment.date(), style)
    return f"{_date(moment.date(), style)} {moment.hour}:{moment.minute:02d}"


def write_csv_export(folder: Path, layout: CsvLayout, rows: Sequence[SiteRow],
                     visits: Sequence[SiteVisit], rng: random.Random) -> None:
    styles, weights = zip(*layout.date_styles, strict=True)
    sex = {"male": "男", "female": "女"}
    kind = {"outpatient": "门诊", "inpatient": "住院", "emergency": "急诊"}
    table = []
    for r in rows:
        cells = {"local_id": r.local_id, "name": r.name, "sex": sex[r.sex],
                 "birth_date": _date(r.birth_date, rng.choices(styles, weights)[0]),
                 "resident_id": r.resident_id or "", "phone": r.phone or "",
                 "address": r.address, "updated_at": f"{r.updated_at:%Y-%m-%d %H:%M}"}
        table.append([cells[f] for f, _ in layout.patients])
    _write_csv(folder / "patients.csv", [h for _, h in layout.patients], table)
    table = []
    for v in visits:
        style = rng.choices(styles, weights)[0]
        cells = {"local_id": v.local_id, "patient_local_id": v.patient_local_id,
                 "kind": kind[v.kind], "start": _when(v.start, style),
                 "end": _when(v.end, style), "department": v.department,
                 "diagnosis_text": v.diagnosis_text, "diagnosis_code": v.diagnosis_code or ""}
        table.append([cells[f] for f, _ in layout.visits])
    _write_csv(folder / "visits.csv", [h for _, h in layout.visits], table)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue(), encoding="utf-8-sig")
