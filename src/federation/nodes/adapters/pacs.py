"""A PACS/RIS study-list export: ``studies.csv`` with DICOM keywords as headers.

The export lists one imaging study per row at study level (PS3.4 C.6.1.1.2 Study
Level keys): PatientID, PatientName, PatientBirthDate, PatientSex, StudyInstanceUID,
AccessionNumber, StudyDate, StudyTime, ModalitiesInStudy, StudyDescription,
BodyPartExamined, NumberOfStudyRelatedSeries, NumberOfStudyRelatedInstances and,
where the RIS knows it, AdmissionID (the HIS visit). Text is UTF-8 (BOM optional) or
GB18030. A study list is not a master patient index: it answers only
:meth:`PacsStudyListAdapter.clinical`, keyed by the HIS patient id the RIS copied.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from federation.errors import SourceError
from federation.nodes.adapters.base import SourceAdapter
from federation.nodes.adapters.normalise import read_export, value_shape
from federation.nodes.model import (
    ClinicalRecord,
    EncounterRecord,
    ImagingStudyRecord,
    PatientQuery,
    PatientRecord,
)

__all__ = ["IMAGING_MODALITIES", "STUDY_HEADERS", "PacsStudyListAdapter"]

STUDY_HEADERS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                 "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime",
                 "ModalitiesInStudy", "StudyDescription", "BodyPartExamined",
                 "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "AdmissionID")
#: acquisition modalities (PS3.3 C.7.3.1.1.1); SR, KO, PR, SEG … describe images, not studies
IMAGING_MODALITIES = frozenset((
    "CR", "CT", "DX", "MG", "MR", "NM", "PT", "US", "XA", "RF", "ES", "OT", "IO", "PX",
    "OP", "OCT", "BMD", "XC", "GM", "SM", "IVUS", "DG", "RG", "TG"))
_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TIME = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?")
_STUDY_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Snapshot:
    stamp: tuple[int, int]
    studies: dict[str, list[ImagingStudyRecord]] = field(default_factory=dict)
    quarantine: list[tuple[str, str]] = field(default_factory=list)


class PacsStudyListAdapter(SourceAdapter):
    """``studies.csv`` (or a folder holding it), read whole and re-read when it changes."""

    def __init__(self, source: Path) -> None:
        super().__init__()
        source = Path(source).resolve()
        self.path = source / "studies.csv" if source.is_dir() else source
        if not self.path.is_file():
            raise SourceError(f"PACS study list {self.path} does not exist")
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._load()

    def _stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise SourceError(f"PACS study list {self.path} has disappeared") from None
        return st.st_mtime_ns, st.st_size

    def _load(self) -> _Snapshot:
        with self._lock:
            stamp = self._stamp()
            if self._snapshot is not None and self._snapshot.stamp == stamp:
                return self._snapshot
            snap = _Snapshot(stamp)
            self._read(snap)
            for studies in snap.studies.values():
                studies.sort(key=lambda s: (s.started or dt.datetime.min, s.local_id))
            self._snapshot = snap
            self.quarantine, self._quarantined = [], set()
            for key, reason in snap.quarantine:
                self._quarantine(key, reason)
            return snap

    def _read(self, snap: _Snapshot) -> None:
        reader = csv.reader(io.StringIO(
            read_export(self.path, f"PACS study list {self.path.name}"), newline=""))
        header = [h.strip() for h in next(reader, [])]
        missing = [h for h in ("PatientID", "StudyDate", "ModalitiesInStudy")
                   if h not in header]
        if "StudyInstanceUID" not in header and "AccessionNumber" not in header:
            missing.append("StudyInstanceUID or AccessionNumber")
        if missing:
            raise SourceError(f"PACS study list {self.path.name} lacks required headers: "
                              + ", ".join(missing))
        seen: dict[str, str] = {}
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            where = f"{self.path.name}:{reader.line_num}"
            if len(cells) > len(header):
                snap.quarantine.append((where, f"row has {len(cells)} cells, the header "
                                               f"{len(header)}"))
                continue
            row = {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header)}
            try:
                study = _study(row)
            except _Bad as exc:
                snap.quarantine.append((where, exc.reason))
                continue
            key = study.accession_number or f"uid:{study.study_uid}"
            if key in seen:
                what = "AccessionNumber" if study.accession_number else "StudyInstanceUID"
                snap.quarantine.append((where, f"duplicate {what} (first at {seen[key]})"))
                continue
            seen[key] = where
            snap.studies.setdefault(study.patient_local_id, []).append(study)

    # ----------------------------------------------------------------- the interface

    def search_patients(self, query: PatientQuery) -> list[PatientRecord]:
        return []

    def get_patient(self, local_id: str) -> PatientRecord | None:
        return None

    def encounters(self, patient_local_id: str) -> list[EncounterRecord]:
        return []

    def clinical(self, patient_local_id: str) -> list[ClinicalRecord]:
        """The patient's studies, oldest first."""
        return list(self._load().studies.get(patient_local_id, ()))

    def source_stamp(self) -> object:
        return self._stamp()

    def count_patients(self) -> int:
        return 0

    def iter_patient_ids(self) -> Iterator[str]:
        yield from ()

    def close(self) -> None:
        self._snapshot = None


def _date(text: str, what: str) -> dt.date:
    m = _DATE.fullmatch(text)
    if m is None:
        raise _Bad(f"{what} '{value_shape(text)}' is not a DICOM DA (YYYYMMDD)")
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        raise _Bad(f"{what} is not a calendar date") from None


def _time(text: str) -> dt.time:
    m = _TIME.fullmatch(text)
    if m is None:
        raise _Bad(f"StudyTime '{value_shape(text)}' is not a DICOM TM (HHMMSS[.ffffff])")
    try:
        return dt.time(int(m[1]), int(m[2] or 0), int(m[3] or 0))
    except ValueError:
        raise _Bad("StudyTime is not a valid time of day") from None


def _count(text: str, what: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise _Bad(f"{what} '{value_shape(text)}' is not a non-negative whole number")
    return int(text)


def _modality(text: str) -> str:
    codes = [c.strip().upper() for c in text.split("\\") if c.strip()]
    if not codes:
        raise _Bad("ModalitiesInStudy is blank")
    for code in codes:
        if code in IMAGING_MODALITIES:
            return code
    raise _Bad(f"ModalitiesInStudy names no imaging modality ({len(codes)} codes)")


def _study(row: dict[str, str]) -> ImagingStudyRecord:
    patient = row.get("PatientID", "")
    if not patient:
        raise _Bad("PatientID is blank")
    uid = row.get("StudyInstanceUID", "") or None
    accession = row.get("AccessionNumber", "") or None
    if uid is None and accession is None:
        raise _Bad("StudyInstanceUID and AccessionNumber are both blank")
    if uid is not None and (len(uid) > 64 or not _STUDY_UID.fullmatch(uid)):
        raise _Bad("StudyInstanceUID is not a DICOM UID (PS3.5 §9.1)")
    if not row.get("StudyDate", ""):
        raise _Bad("StudyDate is blank")
    day = _date(row["StudyDate"], "StudyDate")
    if row.get("PatientBirthDate", ""):
        _date(row["PatientBirthDate"], "PatientBirthDate")
    started = dt.datetime.combine(day, _time(row["StudyTime"]) if row.get("StudyTime")
                                  else dt.time())
    return ImagingStudyRecord(
        local_id=accession or uid or "", patient_local_id=patient,
        encounter_local_id=row.get("AdmissionID", "") or None, study_uid=uid,
        accession_number=accession, modality=_modality(row.get("ModalitiesInStudy", "")),
        started=started, description=row.get("StudyDescription", "") or None,
        body_part=row.get("BodyPartExamined", "") or None,
        number_of_series=_count(row.get("NumberOfStudyRelatedSeries", ""),
                                "NumberOfStudyRelatedSeries"),
        number_of_instances=_count(row.get("NumberOfStudyRelatedInstances", ""),
                                   "NumberOfStudyRelatedInstances"))
