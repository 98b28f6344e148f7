"""Write one site's source system the way its vendor (or its Excel) would.

* vendor A (city-1, county-a): ``PAT_MASTER_INDEX`` / ``PAT_VISIT``, 10-character
  string ids, sex 男/女, 'YYYY-MM-DD' dates, 'YYYY-MM-DD HH:MM:SS' times, O/I/E types.
* vendor B (county-b): ``t_hzxx`` / ``t_jzjl``, integer keys, sex per GB/T 2261.1 as
  an integer, 'YYYYMMDD' dates, 'YYYY/MM/DD HH:MM' times, 门诊/住院/急诊.
* vendor A clinical tables: ``LAB_MASTER`` / ``LAB_RESULT`` (results point at their
  report), ``VITAL_SIGNS_REC``, ``ORDERS``, ``PAT_ALLERGY``, ``MR_DISCHARGE_SUMMARY``.
* vendor B clinical tables: ``t_tzjl`` (vitals), ``t_yz`` (orders), ``t_gms`` (allergies),
  ``t_cyxj`` (discharge summaries); its laboratory results go out as HL7 instead.
* a PACS study list (city-1): ``studies.csv`` with DICOM keyword headers.
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
from typing import TYPE_CHECKING

from federation.nodes.adapters.normalise import split_name

if TYPE_CHECKING:
    from federation.synth.clinical import SiteClinical

__all__ = [
    "CSV_LAYOUTS",
    "PACS_HEADER",
    "CsvLayout",
    "SiteRow",
    "SiteVisit",
    "write_csv_export",
    "write_pacs_studies",
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


_VENDOR_A_CLINICAL_DDL = """
CREATE TABLE LAB_MASTER (
    REPORT_ID           VARCHAR(12) NOT NULL PRIMARY KEY,
    PATIENT_ID          VARCHAR(10) NOT NULL,
    VISIT_ID            VARCHAR(12),
    TEST_CODE           VARCHAR(10),
    TEST_NAME           VARCHAR(40) NOT NULL,
    SPECIMEN            VARCHAR(10),
    SPCM_SAMPLE_DATE_TIME VARCHAR(19),
    REPORT_DATE_TIME    VARCHAR(19) NOT NULL,
    RESULT_STATUS       CHAR(1)
);
CREATE INDEX IDX_LM_PATIENT ON LAB_MASTER (PATIENT_ID);
CREATE TABLE LAB_RESULT (
    RESULT_ID           VARCHAR(16) NOT NULL PRIMARY KEY,
    REPORT_ID           VARCHAR(12) NOT NULL REFERENCES LAB_MASTER (REPORT_ID),
    PATIENT_ID          VARCHAR(10) NOT NULL,
    VISIT_ID            VARCHAR(12),
    ITEM_NO             INTEGER,
    REPORT_ITEM_CODE    VARCHAR(10) NOT NULL,
    REPORT_ITEM_NAME    VARCHAR(40) NOT NULL,
    LOINC_CODE          VARCHAR(10),
    RESULT              VARCHAR(20),
    VALUE_TYPE          CHAR(1),
    UNITS               VARCHAR(10),
    REF_LOW             VARCHAR(10),
    REF_HIGH            VARCHAR(10),
    REF_RANGE           VARCHAR(20),
    ABNORMAL_INDICATOR  VARCHAR(2),
    RESULT_DATE_TIME    VARCHAR(19)
);
CREATE INDEX IDX_LR_PATIENT ON LAB_RESULT (PATIENT_ID);
CREATE TABLE VITAL_SIGNS_REC (
    VS_ID               VARCHAR(12) NOT NULL PRIMARY KEY,
    PATIENT_ID          VARCHAR(10) NOT NULL,
    VISIT_ID            VARCHAR(12),
    TIME_POINT          VARCHAR(19) NOT NULL,
    VITAL_SIGNS         VARCHAR(10) NOT NULL,
    VITAL_SIGNS_VALUES  VARCHAR(10),
    VITAL_SIGNS_VALUES2 VARCHAR(10),
    UNITS               VARCHAR(10)
);
CREATE INDEX IDX_VS_PATIENT ON VITAL_SIGNS_REC (PATIENT_ID);
CREATE TABLE ORDERS (
    ORDER_ID            VARCHAR(12) NOT NULL PRIMARY KEY,
    PATIENT_ID          VARCHAR(10) NOT NULL,
    VISIT_ID            VARCHAR(12),
    ORDER_CODE          VARCHAR(10),
    ORDER_TEXT          VARCHAR(80) NOT NULL,
    DOSAGE              VARCHAR(10),
    DOSAGE_UNITS        VARCHAR(10),
    DOSAGE_TEXT         VARCHAR(40),
    ADMINISTRATION      VARCHAR(20),
    FREQUENCY           VARCHAR(10),
    START_DATE_TIME     VARCHAR(19) NOT NULL,
    ORDER_STATUS        CHAR(1)
);
CREATE INDEX IDX_ORD_PATIENT ON ORDERS (PATIENT_ID);
CREATE TABLE PAT_ALLERGY (
    ALLERGY_ID          VARCHAR(12) NOT NULL PRIMARY KEY,
    PATIENT_ID          VARCHAR(10) NOT NULL,
    VISIT_ID            VARCHAR(12),
    ALLERGEN_CODE       VARCHAR(10),
    ALLERGEN            VARCHAR(40) NOT NULL,
    ALLERGEN_TYPE       VARCHAR(4),
    SEVERITY            VARCHAR(4),
    REACTION            VARCHAR(40),
    RECORD_DATE         VARCHAR(19)
);
CREATE INDEX IDX_ALG_PATIENT ON PAT_ALLERGY (PATIENT_ID);
CREATE TABLE MR_DISCHARGE_SUMMARY (
    DOC_ID              VARCHAR(12) NOT NULL PRIMARY KEY,
    PATIENT_ID          VARCHAR(10) NOT NULL,
    VISIT_ID            VARCHAR(12),
    TITLE               VARCHAR(40) NOT NULL,
    CREATE_DATE_TIME    VARCHAR(19) NOT NULL,
    CONTENT             TEXT NOT NULL
);
CREATE INDEX IDX_DS_PATIENT ON MR_DISCHARGE_SUMMARY (PATIENT_ID);
"""
# vital kind → the item name each vendor's nursing system records
_VITAL_NAMES_A = {"blood-pressure": "血压", "heart-rate": "脉搏", "body-temperature": "体温",
                  "respiratory-rate": "呼吸", "oxygen-saturation": "血氧饱和度",
                  "body-weight": "体重", "body-height": "身高"}
_VITAL_NAMES_B = {"blood-pressure": "血压", "heart-rate": "心率", "body-temperature": "体温",
                  "respiratory-rate": "呼吸频率", "oxygen-saturation": "血氧",
                  "body-weight": "体重", "body-height": "身高"}
_ORDER_STATUS_A = {"active": "1", "stopped": "3", "completed": "4"}
_ORDER_STATUS_B = {"active": 0, "stopped": 2, "completed": 3}
_ALLERGY_TYPE = {"medication": "药物", "food": "食物", "environment": "环境"}
_ALLERGY_TYPE_B = {"medication": 1, "food": 2, "environment": 3}
_SEVERITY = {"low": "轻", "high": "重"}


def _num(value: object) -> str | None:
    return None if value is None else format(value, "f")


def write_vendor_a(path: Path, rows: Sequence[SiteRow], visits: Sequence[SiteVisit],
                   clinical: SiteClinical | None = None) -> None:
    sex = {"male": "男", "female": "女"}
    kind = {"outpatient": "O", "inpatient": "I", "emergency": "E"}
    stamp = "%Y-%m-%d %H:%M:%S"
    inserts: list[tuple[str, Sequence[tuple]]] = [
        ("INSERT INTO PAT_MASTER_INDEX VALUES (?,?,?,?,?,?,?,?,?)",
         [(r.local_id, r.name, sex[r.sex], r.birth_date.isoformat(), r.resident_id, r.phone,
           r.address, r.charge_type, r.updated_at.strftime(stamp)) for r in rows]),
        ("INSERT INTO PAT_VISIT VALUES (?,?,?,?,?,?,?,?)",
         [(v.local_id, v.patient_local_id, kind[v.kind], v.start.strftime(stamp),
           v.end.strftime(stamp) if v.end else None, v.department, v.diagnosis_text,
           v.diagnosis_code) for v in visits]),
    ]
    ddl = _VENDOR_A_DDL
    if clinical is not None:
        ddl += _VENDOR_A_CLINICAL_DDL
        inserts += _vendor_a_clinical(clinical, stamp)
    _write_sqlite(path, ddl, inserts)


def _vendor_a_clinical(c: SiteClinical, stamp: str) -> list[tuple[str, Sequence[tuple]]]:
    results = [res for rep in c.reports for res in c.results[rep.local_id]]
    return [
        ("INSERT INTO LAB_MASTER VALUES (?,?,?,?,?,?,?,?,?)",
         [(r.local_id, r.patient_local_id, r.encounter_local_id, r.local_code, r.name,
           "尿液" if r.local_code == "UA" else "血液",
           r.effective.strftime(stamp) if r.effective else None, r.issued.strftime(stamp),
           "F") for r in c.reports]),
        ("INSERT INTO LAB_RESULT VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
         [(r.local_id, r.report_local_id, r.patient_local_id, r.encounter_local_id,
           int(r.local_id.rsplit("-", 1)[1]), r.local_code, r.name, r.loinc_code, r.value,
           "N" if r.numeric else "C", r.unit, _num(r.reference_low), _num(r.reference_high),
           r.reference_text, r.abnormal_flag, r.effective.strftime(stamp)) for r in results]),
        ("INSERT INTO VITAL_SIGNS_REC VALUES (?,?,?,?,?,?,?,?)",
         [(v.local_id, v.patient_local_id, v.encounter_local_id, v.effective.strftime(stamp),
           _VITAL_NAMES_A[v.kind], _num(v.value), _num(v.diastolic), v.unit)
          for v in c.vitals]),
        ("INSERT INTO ORDERS VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
         [(m.local_id, m.patient_local_id, m.encounter_local_id, m.local_code, m.drug_name,
           _num(m.dose_quantity), m.dose_unit, m.dose_text, m.route, m.frequency,
           m.authored.strftime(stamp), _ORDER_STATUS_A[m.status]) for m in c.medications]),
        ("INSERT INTO PAT_ALLERGY VALUES (?,?,?,?,?,?,?,?,?)",
         [(a.local_id, a.patient_local_id, a.encounter_local_id, a.local_code, a.substance,
           _ALLERGY_TYPE[a.category], _SEVERITY.get(a.criticality or ""), a.reaction,
           a.recorded.strftime(stamp) if a.recorded else None) for a in c.allergies]),
        ("INSERT INTO MR_DISCHARGE_SUMMARY VALUES (?,?,?,?,?,?)",
         [(d.local_id, d.patient_local_id, d.encounter_local_id, d.title,
           d.created.strftime(stamp), d.content) for d in c.documents]),
    ]


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


_VENDOR_B_CLINICAL_DDL = """
CREATE TABLE t_tzjl (
    jlid  INTEGER PRIMARY KEY,
    hzid  INTEGER NOT NULL,
    jzid  INTEGER,
    xmmc  TEXT NOT NULL,
    sz    TEXT,
    sz2   TEXT,
    dw    TEXT,
    clsj  CHAR(12) NOT NULL
);
CREATE INDEX ix_tzjl_hzid ON t_tzjl (hzid);
CREATE TABLE t_yz (
    yzid  INTEGER PRIMARY KEY,
    hzid  INTEGER NOT NULL,
    jzid  INTEGER,
    ypdm  TEXT,
    ypmc  TEXT NOT NULL,
    jl    TEXT,
    jldw  TEXT,
    jlsm  TEXT,
    gytj  TEXT,
    pc    TEXT,
    kssj  TEXT NOT NULL,
    yzzt  INTEGER
);
CREATE INDEX ix_yz_hzid ON t_yz (hzid);
CREATE TABLE t_gms (
    gmid  INTEGER PRIMARY KEY,
    hzid  INTEGER NOT NULL,
    jzid  INTEGER,
    gmydm TEXT,
    gmy   TEXT NOT NULL,
    gmlx  INTEGER,
    yzcd  INTEGER,
    fy    TEXT,
    djrq  CHAR(8)
);
CREATE INDEX ix_gms_hzid ON t_gms (hzid);
CREATE TABLE t_cyxj (
    xjid  INTEGER PRIMARY KEY,
    hzid  INTEGER NOT NULL,
    jzid  INTEGER,
    bt    TEXT NOT NULL,
    nr    TEXT NOT NULL,
    cjsj  TEXT NOT NULL
);
CREATE INDEX ix_cyxj_hzid ON t_cyxj (hzid);
"""


def write_vendor_b(path: Path, rows: Sequence[SiteRow], visits: Sequence[SiteVisit],
                   clinical: SiteClinical | None = None) -> None:
    """Vendor B's database; with ``clinical``, its vitals, orders, allergies and discharge
    summaries too (one vital-sign row carries an impossible month, for the quality
    report)."""
    sex = {"male": 1, "female": 2}
    kind = {"outpatient": "门诊", "inpatient": "住院", "emergency": "急诊"}
    stamp = "%Y/%m/%d %H:%M"
    depts: dict[str, str] = {}
    for v in visits:
        depts.setdefault(v.department, f"{len(depts) + 1:03d}")
    inserts: list[tuple[str, Sequence[tuple]]] = [
        ("INSERT INTO t_hzxx VALUES (?,?,?,?,?,?,?,?,?)",
         [(int(r.local_id), r.name, sex[r.sex], f"{r.birth_date:%Y%m%d}", r.resident_id,
           r.phone, r.address, r.charge_type, f"{r.updated_at:%Y%m%d%H%M%S}") for r in rows]),
        ("INSERT INTO t_jzjl VALUES (?,?,?,?,?,?,?,?,?)",
         [(int(v.local_id), int(v.patient_local_id), kind[v.kind], v.start.strftime(stamp),
           v.end.strftime(stamp) if v.end else None, depts[v.department], v.department,
           v.diagnosis_text, v.diagnosis_code) for v in visits]),
    ]
    ddl = _VENDOR_B_DDL
    if clinical is not None:
        ddl += _VENDOR_B_CLINICAL_DDL
        inserts += _vendor_b_clinical(clinical, stamp)
    _write_sqlite(path, ddl, inserts)


def _vendor_b_clinical(c: SiteClinical, stamp: str) -> list[tuple[str, Sequence[tuple]]]:
    def visit(local_id: str | None) -> int | None:
        return int(local_id) if local_id else None

    vitals = [[int(v.local_id), int(v.patient_local_id), visit(v.encounter_local_id),
               _VITAL_NAMES_B[v.kind], _num(v.value), _num(v.diastolic), v.unit,
               f"{v.effective:%Y%m%d%H%M}"] for v in c.vitals]
    if vitals:                                     # a nurse typed month 13
        bad = vitals[len(vitals) // 2]
        bad[7] = f"{bad[7][:4]}13{bad[7][6:]}"
    return [
        ("INSERT INTO t_tzjl VALUES (?,?,?,?,?,?,?,?)", [tuple(v) for v in vitals]),
        ("INSERT INTO t_yz VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
         [(int(m.local_id), int(m.patient_local_id), visit(m.encounter_local_id), m.local_code,
           m.drug_name, _num(m.dose_quantity), m.dose_unit, m.dose_text, m.route,
           m.frequency, m.authored.strftime(stamp), _ORDER_STATUS_B[m.status])
          for m in c.medications]),
        ("INSERT INTO t_gms VALUES (?,?,?,?,?,?,?,?,?)",
         [(int(a.local_id), int(a.patient_local_id), visit(a.encounter_local_id), a.local_code,
           a.substance, _ALLERGY_TYPE_B[a.category], 2 if a.criticality == "high" else 1,
           a.reaction, f"{a.recorded:%Y%m%d}" if a.recorded else None) for a in c.allergies]),
        ("INSERT INTO t_cyxj VALUES (?,?,?,?,?,?)",
         [(int(d.local_id), int(d.patient_local_id), visit(d.encounter_local_id), d.title,
           d.content, d.created.strftime(stamp)) for d in c.documents]),
    ]


PACS_HEADER = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
               "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime",
               "ModalitiesInStudy", "StudyDescription", "BodyPartExamined",
               "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "AdmissionID")


def write_pacs_studies(path: Path, rows: Sequence[SiteRow], clinical: SiteClinical) -> None:
    """The PACS study list as its worklist export writes it: DICOM keywords as headers
    (PS3.6), UTF-8 with BOM, names ``family^given`` (PN, PS3.5 §6.2), dates DA, times TM.
    One row carries 31 February, for the quality report."""
    patients = {r.local_id: r for r in rows}
    table = []
    for s in clinical.studies:
        r = patients[s.patient_local_id]
        family, given = split_name(r.name)
        started = s.started or dt.datetime.min
        table.append([r.local_id, f"{family or r.name.strip()}^{given or ''}",
                      f"{r.birth_date:%Y%m%d}", "M" if r.sex == "male" else "F",
                      s.study_uid or "", s.accession_number or "", f"{started:%Y%m%d}",
                      f"{started:%H%M%S}", s.modality, s.description or "",
                      s.body_part or "", str(s.number_of_series or ""),
                      str(s.number_of_instances or ""), s.encounter_local_id or ""])
    if table:
        bad = table[len(table) // 2]
        bad[6] = f"{bad[6][:4]}0231"
    _write_csv(path, list(PACS_HEADER), table)


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
