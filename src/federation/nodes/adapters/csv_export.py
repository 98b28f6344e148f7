"""Spreadsheet exports from sites with little IT (township health centres).

A site folder holds ``patients.csv`` and optionally ``visits.csv`` as Excel writes them:
UTF-8 with a BOM (or GB18030 from older Excel), Chinese headers that vary by whoever
built the sheet (姓名 / 患者姓名, 身份证号 / 证件号码 …, resolved through an alias table),
dates in several shapes, blank cells. The files are read whole (townships export
thousands of rows, not millions) and re-read when they change on disk.
"""

from __future__ import annotations

import csv
import io
import threading
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from federation.errors import InvalidInput, SourceError
from federation.nodes.adapters.base import (
    PreparedQuery,
    SourceAdapter,
    encounter_from_fields,
    patient_from_fields,
)
from federation.nodes.adapters.normalise import read_export
from federation.nodes.model import EncounterRecord, PatientQuery, PatientRecord

__all__ = ["CSV_VALUES", "PATIENT_HEADERS", "VISIT_HEADERS", "CsvAdapter"]

_ID_HEADERS = ("档案号", "档案编号", "健康档案号", "患者编号", "病人编号", "患者id", "病人id",
               "编号", "门诊号", "patient_id")

#: record field → header spellings seen in site exports (compared after folding)
PATIENT_HEADERS: Mapping[str, tuple[str, ...]] = {
    "local_id": _ID_HEADERS,
    "name": ("姓名", "患者姓名", "病人姓名", "name"),
    "gender": ("性别", "sex", "gender"),
    "birth_date": ("出生日期", "出生年月日", "出生年月", "生日", "birth_date"),
    "resident_id": ("身份证号", "身份证号码", "证件号码", "身份证", "公民身份号码", "id_no"),
    "phone": ("联系电话", "电话", "手机", "手机号", "手机号码", "联系方式", "phone"),
    "address": ("家庭住址", "住址", "现住址", "地址", "联系地址", "address"),
    "updated_at": ("更新时间", "最后更新", "修改时间", "updated_at"),
}
VISIT_HEADERS: Mapping[str, tuple[str, ...]] = {
    "local_id": ("就诊编号", "就诊号", "就诊流水号", "流水号", "就诊id", "visit_id"),
    "patient_local_id": _ID_HEADERS,
    "kind": ("就诊类型", "就诊类别", "类型", "visit_type"),
    "start": ("就诊日期", "就诊时间", "入院时间", "开始时间", "start"),
    "end": ("离院日期", "离院时间", "出院时间", "结束时间", "end"),
    "department": ("科室", "就诊科室", "科别", "department"),
    "diagnosis_text": ("诊断", "诊断名称", "主要诊断", "diagnosis"),
    "diagnosis_code": ("诊断编码", "诊断代码", "icd编码", "icd10", "diagnosis_code"),
}
#: cell values → record values for coded columns
CSV_VALUES: Mapping[str, Mapping[str, str]] = {
    "gender": {"男": "male", "女": "female", "男性": "male", "女性": "female", "未知": "unknown",
               "M": "male", "F": "female", "m": "male", "f": "female",
               "1": "male", "2": "female", "0": "unknown", "9": "unknown"},
    "kind": {"门诊": "outpatient", "住院": "inpatient", "急诊": "emergency",
             "O": "outpatient", "I": "inpatient", "E": "emergency"},
}
_REQUIRED = {"patients": ("local_id", "name"),
             "visits": ("local_id", "patient_local_id", "kind", "start")}


def _fold_header(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split()).casefold()


@dataclass(slots=True)
class _Snapshot:
    stamp: tuple[tuple[int, int], ...]
    patients: dict[str, PatientRecord] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    rows: int = 0
    visits: dict[str, list[EncounterRecord]] = field(default_factory=dict)
    quarantine: list[tuple[str, str]] = field(default_factory=list)


class CsvAdapter(SourceAdapter):
    """A site's ``patients.csv`` (+ ``visits.csv``) export; ``source`` is the folder or
    the patients file (visits are then the sibling ``visits.csv``)."""

    def __init__(self, source: Path) -> None:
        super().__init__()
        source = Path(source).resolve()
        self.patients_path = source / "patients.csv" if source.is_dir() else source
        self.visits_path = self.patients_path.with_name("visits.csv")
        if not self.patients_path.is_file():
            raise SourceError(f"CSV export {self.patients_path} does not exist")
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._load()

    # ----------------------------------------------------------------- loading

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        stats = []
        for path in (self.patients_path, self.visits_path):
            try:
                st = path.stat()
                stats.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                stats.append((0, -1))
        return tuple(stats)

    def _load(self) -> _Snapshot:
        """The parsed export, re-read when either file changed since the last read."""
        with self._lock:
            stamp = self._stamp()
            if self._snapshot is not None and self._snapshot.stamp == stamp:
                return self._snapshot
            snap = _Snapshot(stamp)
            self._read_patients(snap)
            if self.visits_path.is_file():
                self._read_visits(snap)
            self._snapshot = snap
            self.quarantine, self._quarantined = [], set()
            for key, reason in snap.quarantine:
                self._quarantine(key, reason)
            return snap

    def _read_patients(self, snap: _Snapshot) -> None:
        seen: dict[str, str] = {}
        for where, fields, problem in _read_table(self.patients_path, PATIENT_HEADERS,
                                                  "patients"):
            snap.rows += 1
            if problem:
                snap.quarantine.append((where, problem))
                continue
            local = (fields.get("local_id") or "").strip()
            if local:
                snap.ids.append(local)
            if local in seen:
                snap.quarantine.append(
                    (where, f"duplicate local patient id (first at {seen[local]})"))
                continue
            try:
                rec = patient_from_fields(fields, values=CSV_VALUES)
            except InvalidInput as exc:
                snap.quarantine.append((local or where, exc.message))
                continue
            seen[local] = where
            snap.patients[rec.local_id] = rec
        snap.patients = dict(sorted(snap.patients.items()))

    def _read_visits(self, snap: _Snapshot) -> None:
        for where, fields, problem in _read_table(self.visits_path, VISIT_HEADERS, "visits"):
            if problem:
                snap.quarantine.append((where, problem))
                continue
            try:
                visit = encounter_from_fields(fields, values=CSV_VALUES)
            except InvalidInput as exc:
                local = (fields.get("local_id") or "").strip()
                snap.quarantine.append((f"visit:{local}" if local else where, exc.message))
                continue
            snap.visits.setdefault(visit.patient_local_id, []).append(visit)
        for visits in snap.visits.values():
            visits.sort(key=lambda v: (v.start, v.local_id))

    # ----------------------------------------------------------------- the interface

    def search_patients(self, query: PatientQuery) -> list[PatientRecord]:
        return PreparedQuery(query).first_matches(self._load().patients.values())

    def get_patient(self, local_id: str) -> PatientRecord | None:
        return self._load().patients.get(local_id)

    def encounters(self, patient_local_id: str) -> list[EncounterRecord]:
        return list(self._load().visits.get(patient_local_id, ()))

    def source_stamp(self) -> object:
        return self._stamp()

    def count_patients(self) -> int:
        return self._load().rows

    def iter_patient_ids(self) -> Iterator[str]:
        yield from list(self._load().ids)

    def close(self) -> None:
        self._snapshot = None


def _read_table(path: Path, aliases: Mapping[str, tuple[str, ...]],
                kind: str) -> Iterator[tuple[str, dict[str, str], str | None]]:
    """(row key 'file:line', {record field: cell}, problem) for each non-blank data row;
    the problem is set (and the cells withheld) when the row does not fit the header."""
    reader = csv.reader(io.StringIO(read_export(path, str(path)), newline=""))
    header = next(reader, None)
    if header is None:
        return
    lookup = {_fold_header(a): f for f, names in aliases.items() for a in names}
    positions: dict[str, int] = {}
    for i, name in enumerate(header):
        fld = lookup.get(_fold_header(name))
        if fld is not None and fld not in positions:
            positions[fld] = i
    missing = [f for f in _REQUIRED[kind] if f not in positions]
    if missing:
        raise SourceError(f"{path.name} has no column for {missing}; expected headers such as "
                          + ", ".join(aliases[f][0] for f in missing))
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        where = f"{path.name}:{reader.line_num}"
        if len(cells) > len(header):
            yield where, {}, f"row has {len(cells)} cells, the header {len(header)}"
            continue
        yield where, {f: cells[i] if i < len(cells) else "" for f, i in positions.items()}, None
