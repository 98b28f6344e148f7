"""HL7 v2 interface drop folders: a LIS/HIS writes ADT and ORU messages as ``*.hl7`` files.

Supported (HL7 v2.3 – v2.5.1, ER7 encoding):

* ``ADT^A01`` admit, ``ADT^A04`` register an outpatient, ``ADT^A08`` update patient
  information — PID becomes a :class:`PatientRecord`, PV1 an :class:`EncounterRecord`.
* ``ORU^R01`` unsolicited observation results (v2.5 §7.3.1) — each OBR becomes a
  :class:`LabReportRecord`, each OBX under it a :class:`LabResultRecord`.

A file holds one or more messages; segments end in CR (LF and CRLF are tolerated) and a
message starts at each ``MSH`` segment. Messages are parsed by hl7apy at the tolerant
validation level; components are read by position from the elements hl7apy builds and
unescaped per v2.5 §2.7 (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``).

Newer information wins: demographics come from the latest ADT message for the patient
(by MSH-7, then file order), and from an ORU's PID only while no ADT names the patient;
a visit or a report re-sent under the same id replaces the earlier one. A message that
cannot be used is quarantined whole under ``"{file}#{n}"`` (plus ``/{MSH-10}`` when the
control id is readable); an unusable OBR or OBX only quarantines itself
(``…#obr-N`` / ``…#obx-N``, N counting that segment type in the message). Reasons name the
segment and field, never a value that could be patient data.

Times: HL7 TS ``YYYYMMDD[HH[MM[SS[.S]]]][+/-ZZZZ]``; like every adapter, the site's
local wall-clock time is kept naive and a UTC offset, if sent, is ignored.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from federation.errors import InvalidInput, SourceError
from federation.nodes.adapters.base import PreparedQuery, SourceAdapter
from federation.nodes.adapters.normalise import (
    decode_export,
    normalise_phone,
    normalise_resident_id,
    split_name,
    value_shape,
)
from federation.nodes.model import (
    ClinicalRecord,
    EncounterRecord,
    Gender,
    LabReportRecord,
    LabResultRecord,
    PatientQuery,
    PatientRecord,
)

#: a snapshot is trusted this long before the folder is looked at again
RECHECK_SECONDS = 1.0

__all__ = ["SUPPORTED_EVENTS", "SUPPORTED_VERSIONS", "Hl7Adapter", "parse_ts", "unescape"]

SUPPORTED_VERSIONS = frozenset(("2.3", "2.3.1", "2.4", "2.5", "2.5.1"))
SUPPORTED_EVENTS = frozenset(("ADT^A01", "ADT^A04", "ADT^A08", "ORU^R01"))

#: HL7 table 0001 administrative sex → FHIR gender
_SEX: dict[str, Gender] = {"M": "male", "F": "female", "O": "other", "A": "other",
                           "U": "unknown", "N": "unknown"}
#: HL7 table 0004 patient class → encounter kind
_PATIENT_CLASS = {"O": "outpatient", "I": "inpatient", "E": "emergency"}
#: HL7 tables 0085 (OBX-11) and 0123 (OBR-25) → FHIR status
_RESULT_STATUS = {"F": "final", "P": "preliminary", "C": "corrected"}
_FLAGS = frozenset(("H", "L", "N", "HH", "LL", "A"))
_RESIDENT_ID_TYPES = frozenset(("NNCHN", "ID"))
_NUMERIC_TYPES = frozenset(("NM", "SN"))

_TS = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,4})?)?)?)?"
                 r"(?:[+-]\d{4})?")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_RANGE = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*[-~～]\s*([+-]?\d+(?:\.\d+)?)\s*")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_CODE = re.compile(r"[A-Z0-9]{1,3}")
_EVENT = re.compile(r"[A-Z0-9]{3}\^[A-Z0-9]{3}")
_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
_ESCAPE_SEQ = re.compile(r"\\([FSTRE]|H|N|\.br|X[0-9A-Fa-f]*|C[0-9A-Fa-f]*|M[0-9A-Fa-f]*|Z[^\\]*)\\")


class _Unusable(Exception):
    """A message (or one OBR/OBX) that cannot be used; ``reason`` carries no patient data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------- reading ER7 elements


def unescape(text: str) -> str:
    """Undo HL7 v2 escapes (v2.5 §2.7.4) for the default delimiters; formatting
    sequences (``\\H\\``, ``\\N\\``, ``\\.br\\``) and hex/charset escapes are dropped
    except ``\\.br\\``, which becomes a newline."""
    def sub(m: re.Match[str]) -> str:
        code = m[1]
        if code in _ESCAPES:
            return _ESCAPES[code]
        return "\n" if code == ".br" else ""
    return _ESCAPE_SEQ.sub(sub, text)


def _position(name: str) -> int | None:
    head, _, tail = name.rpartition("_")
    return int(tail) if head and tail.isdigit() else None


def _part(element: Any, index: int) -> Any | None:
    """The ``index``-th component (or sub-component) of an hl7apy element; a primitive
    element is its own first part."""
    children = list(element.children)
    if not any(_position(c.name) is not None for c in children):
        return element if index == 1 else None
    return next((c for c in children if _position(c.name) == index), None)


def _fields(segment: Any, n: int) -> list[Any]:
    """The repetitions of field ``n`` of a segment (empty when absent)."""
    name = f"{segment.name}_{n}"
    return [f for f in segment.children if f.name == name]


def _get(segment: Any | None, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
    """Field ``n`` (repetition ``rep``), component ``comp``, sub-component ``sub`` as
    unescaped text; '' when absent."""
    if segment is None:
        return ""
    reps = _fields(segment, n)
    if rep >= len(reps):
        return ""
    node = _part(reps[rep], comp)
    if node is not None:
        node = _part(node, sub)
    return unescape(node.to_er7()).strip() if node is not None else ""


def parse_ts(text: str, what: str) -> dt.datetime:
    """An HL7 TS/DTM value as a naive local date-time (the offset, if any, is ignored)."""
    m = _TS.fullmatch(text.strip())
    if m is None:
        raise _Unusable(f"invalid date in {what} (shape '{value_shape(text)}')")
    try:
        return dt.datetime(*(int(g) if g else 0 for g in m.groups()))
    except ValueError:
        raise _Unusable(f"invalid date in {what} (not a calendar date)") from None


def _optional_ts(text: str, what: str) -> dt.datetime | None:
    return parse_ts(text, what) if text else None


def _code(text: str) -> str:
    """A short code for a reason; anything longer than a code is shown by shape only."""
    return text if _CODE.fullmatch(text) else f"'{value_shape(text)}'"


# ----------------------------------------------------------------- the adapter


@dataclass(slots=True)
class _Snapshot:
    stamp: tuple[tuple[str, int, int], ...]
    #: patient id → (rank, record); rank = (from ADT, MSH-7, message sequence)
    patients: dict[str, tuple[tuple[bool, dt.datetime, int], PatientRecord]] = \
        field(default_factory=dict)
    visits: dict[str, tuple[tuple[dt.datetime, int], EncounterRecord]] = \
        field(default_factory=dict)
    #: report id → (rank, report, results)
    reports: dict[str, tuple[tuple[dt.datetime, int], LabReportRecord,
                             list[LabResultRecord]]] = field(default_factory=dict)
    control_ids: dict[str, str] = field(default_factory=dict)
    quarantine: list[tuple[str, str]] = field(default_factory=list)
    sequence: int = 0
    #: per patient, built once the folder is read: visits oldest first, clinical records
    visits_of: dict[str, list[EncounterRecord]] = field(default_factory=dict)
    clinical_of: dict[str, list[ClinicalRecord]] = field(default_factory=dict)

    def index(self) -> None:
        for _, visit in self.visits.values():
            self.visits_of.setdefault(visit.patient_local_id, []).append(visit)
        for visits in self.visits_of.values():
            visits.sort(key=lambda v: (v.start, v.local_id))
        entries = sorted(((r, res) for _, r, res in self.reports.values()),
                         key=lambda e: (e[0].issued, e[0].local_id))
        for report, results in entries:
            self.clinical_of.setdefault(report.patient_local_id, []).extend(
                [report, *results])


@dataclass(slots=True)
class _Message:
    key: str
    msg: Any
    event: str
    sent: dt.datetime
    rank: int

    def segments(self, name: str) -> list[Any]:
        return [s for s in self.msg.children if s.name == name]

    def first(self, name: str) -> Any | None:
        found = self.segments(name)
        return found[0] if found else None


class Hl7Adapter(SourceAdapter):
    """An HL7 v2 drop folder (every ``*.hl7`` in name order) or one ``.hl7`` file,
    read whole and re-read when a file is added, removed or changed."""

    def __init__(self, source: Path, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
        super().__init__()
        self.recheck_seconds = recheck_seconds
        self.source = Path(source).resolve()
        if not self.source.exists():
            raise SourceError(f"HL7 drop folder {self.source} does not exist")
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._checked_at = float("-inf")
        self._load()

    # ----------------------------------------------------------------- loading

    def _files(self) -> list[Path]:
        if self.source.is_file():
            return [self.source]
        return sorted(p for p in self.source.glob("*.hl7") if p.is_file())

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        stamps = []
        for path in self._files():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            stamps.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _load(self) -> _Snapshot:
        """The parsed folder, re-read when the file set or any file's size/mtime changed
        (looked at no more than once every ``recheck_seconds``: a full scan asks for
        every patient, and a busy LIS folder holds thousands of files)."""
        with self._lock:
            now = time.monotonic()
            if self._snapshot is not None and now - self._checked_at < self.recheck_seconds:
                return self._snapshot
            stamp = self._stamp()
            self._checked_at = now
            if self._snapshot is not None and self._snapshot.stamp == stamp:
                return self._snapshot
            snap = _Snapshot(stamp)
            for name, _, _ in stamp:
                self._read_file(snap, self.source if self.source.is_file()
                                else self.source / name)
            snap.index()
            self._snapshot = snap
            self.quarantine, self._quarantined = [], set()
            for key, reason in snap.quarantine:
                self._quarantine(key, reason)
            return snap

    def _read_file(self, snap: _Snapshot, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError:
            snap.quarantine.append((f"{path.name}#0", "file could not be read"))
            return
        text = _decode(data)
        if text is None:
            snap.quarantine.append((f"{path.name}#0", "file is neither UTF-8 nor GB18030 text"))
            return
        lead, messages = _split_messages(text)
        if not messages:
            snap.quarantine.append((f"{path.name}#1",
                                    "not an HL7 v2 message (no MSH segment)"))
            return
        if lead:
            snap.quarantine.append((f"{path.name}#0",
                                    "text before the first MSH segment is not an HL7 message"))
        for index, segments in enumerate(messages, start=1):
            snap.sequence += 1
            key = f"{path.name}#{index}"
            control = _control_id(segments[0])
            if control:
                key = f"{key}/{control}"
            try:
                self._read_message(snap, key, control, segments)
            except _Unusable as exc:
                snap.quarantine.append((key, exc.reason))
            except InvalidInput as exc:
                snap.quarantine.append((key, exc.message))

    def _read_message(self, snap: _Snapshot, key: str, control: str | None,
                      segments: list[str]) -> None:
        for n, seg in enumerate(segments, start=1):
            if not _SEGMENT_ID.fullmatch(seg[:3]) or (len(seg) > 3 and seg[3] != "|"):
                raise _Unusable(f"malformed segment {n}: does not start with a segment id")
        if len(segments[0]) < 8 or segments[0][3:8] != "|^~\\&":
            raise _Unusable("MSH-1/MSH-2 delimiters are not the standard |^~\\&")
        # hl7apy refuses versions it has no tables for; say which one, not "could not parse"
        msh_fields = segments[0].split("|")
        version = msh_fields[11].split("^")[0].strip() if len(msh_fields) > 11 else ""
        if version not in SUPPORTED_VERSIONS:
            shown = version if re.fullmatch(r"[0-9.]{1,8}", version) else _code(version)
            raise _Unusable(f"unsupported HL7 version {shown or '(blank)'}")
        try:
            msg = parse_message("\r".join(segments), find_groups=False,
                                validation_level=VALIDATION_LEVEL.TOLERANT)
        except Exception as exc:  # hl7apy raises many types; none may stop the folder
            raise _Unusable(f"malformed message: hl7apy could not parse it "
                            f"({type(exc).__name__})") from None
        msh = msg.children[0]
        event = f"{_get(msh, 9, 1)}^{_get(msh, 9, 2)}"
        if event not in SUPPORTED_EVENTS:
            shown = event if _EVENT.fullmatch(event) else f"'{value_shape(event)}'"
            raise _Unusable(f"unsupported message type {shown}")
        sent_raw = _get(msh, 7)
        if not sent_raw:
            raise _Unusable("MSH-7 message date/time missing")
        sent = parse_ts(sent_raw, "MSH-7")
        if control is not None and control in snap.control_ids:
            raise _Unusable(f"duplicate message control id (first at {snap.control_ids[control]})")
        message = _Message(key, msg, event, sent, snap.sequence)
        if event.startswith("ADT"):
            self._read_adt(snap, message)
        else:
            self._read_oru(snap, message)
        if control is not None:
            snap.control_ids[control] = key

    # ----------------------------------------------------------------- ADT

    def _read_adt(self, snap: _Snapshot, m: _Message) -> None:
        pid = m.first("PID")
        if pid is None:
            raise _Unusable("message truncated: PID segment missing")
        evn = m.first("EVN")
        recorded = _optional_ts(_get(evn, 2), "EVN-2") or m.sent
        patient = _patient(pid, recorded)
        visit = None
        pv1 = m.first("PV1")
        if pv1 is not None and _get(pv1, 19):
            visit = _encounter(pv1, patient.local_id, m, snap)
        _offer_patient(snap, patient, (True, m.sent, m.rank))
        if visit is not None:
            rank = (m.sent, m.rank)
            old = snap.visits.get(visit.local_id)
            if old is None or old[0] <= rank:
                snap.visits[visit.local_id] = (rank, visit)

    # ----------------------------------------------------------------- ORU

    def _read_oru(self, snap: _Snapshot, m: _Message) -> None:
        pid = m.first("PID")
        if pid is None:
            raise _Unusable("message truncated: PID segment missing")
        patient = _patient(pid, m.sent)
        pv1 = m.first("PV1")
        visit = _get(pv1, 19) or None
        groups: list[tuple[Any, list[tuple[int, Any]]]] = []
        obx_count = 0
        for seg in m.msg.children:
            if seg.name == "OBR":
                groups.append((seg, []))
            elif seg.name == "OBX":
                obx_count += 1
                if not groups:
                    snap.quarantine.append((f"{m.key}#obx-{obx_count}",
                                            "OBX before any OBR segment"))
                    continue
                groups[-1][1].append((obx_count, seg))
        if not groups:
            raise _Unusable("message truncated: OBR segment missing")
        reports = []
        for n, (obr, obxs) in enumerate(groups, start=1):
            try:
                reports.append(self._report(snap, m, obr, obxs, patient.local_id, visit))
            except _Unusable as exc:
                snap.quarantine.append((f"{m.key}#obr-{n}",
                                        f"{exc.reason}; its {len(obxs)} OBX skipped"))
        _offer_patient(snap, patient, (False, m.sent, m.rank))
        for report, results in reports:
            rank = (m.sent, m.rank)
            old = snap.reports.get(report.local_id)
            if old is None or old[0] <= rank:
                snap.reports[report.local_id] = (rank, report, results)

    def _report(self, snap: _Snapshot, m: _Message, obr: Any, obxs: list[tuple[int, Any]],
                patient: str, visit: str | None) -> tuple[LabReportRecord, list[LabResultRecord]]:
        local_id = _get(obr, 3) or _get(obr, 2)
        if not local_id:
            raise _Unusable("OBR-3 filler and OBR-2 placer order number both missing")
        code, name = _get(obr, 4, 1), _get(obr, 4, 2) or _get(obr, 4, 5)
        if not name and not code:
            raise _Unusable("OBR-4 universal service id missing")
        issued = _optional_ts(_get(obr, 22), "OBR-22") or m.sent
        effective = _optional_ts(_get(obr, 7), "OBR-7")
        status = _status(_get(obr, 25), "OBR-25")
        results: list[LabResultRecord] = []
        seen: set[str] = set()
        for ordinal, (count, obx) in enumerate(obxs, start=1):
            where = f"{m.key}#obx-{count}"
            try:
                result = _result(obx, ordinal, report=local_id, patient=patient, visit=visit,
                                 fallback=effective or m.sent)
                if result.local_id in seen:
                    raise _Unusable("duplicate OBX-1 set id within its OBR")
            except _Unusable as exc:
                snap.quarantine.append((where, exc.reason))
                continue
            except InvalidInput as exc:
                snap.quarantine.append((where, exc.message))
                continue
            seen.add(result.local_id)
            results.append(result)
        report = LabReportRecord(
            local_id=local_id, patient_local_id=patient, encounter_local_id=visit,
            name=name or code, local_code=code or None, issued=issued, effective=effective,
            status=status, result_local_ids=tuple(r.local_id for r in results))
        return report, results

    # ----------------------------------------------------------------- the interface

    def _patients(self) -> list[PatientRecord]:
        snap = self._load()
        return [snap.patients[k][1] for k in sorted(snap.patients)]

    def search_patients(self, query: PatientQuery) -> list[PatientRecord]:
        return PreparedQuery(query).first_matches(self._patients())

    def get_patient(self, local_id: str) -> PatientRecord | None:
        entry = self._load().patients.get(local_id)
        return entry[1] if entry else None

    def encounters(self, patient_local_id: str) -> list[EncounterRecord]:
        return list(self._load().visits_of.get(patient_local_id, ()))

    def clinical(self, patient_local_id: str) -> list[ClinicalRecord]:
        """The patient's lab reports by issue time, each followed by its results."""
        return list(self._load().clinical_of.get(patient_local_id, ()))

    def source_stamp(self) -> object:
        self._checked_at = float("-inf")  # a scan that follows must see what this saw
        return self._stamp()

    def count_patients(self) -> int:
        return len(self._load().patients)

    def iter_patient_ids(self) -> Iterator[str]:
        yield from sorted(self._load().patients)

    def close(self) -> None:
        self._snapshot = None


# ----------------------------------------------------------------- files and messages


def _decode(data: bytes) -> str | None:
    """UTF-8 (BOM tolerated) then GB18030 — or GB18030 first when MSH-18 declares it."""
    return decode_export(data, gb18030_first=bool(re.search(rb"\|GB ?18030", data[:2048])))


def _split_messages(text: str) -> tuple[bool, list[list[str]]]:
    """(non-blank text before the first MSH?, each message's segments)."""
    lines = [s.strip("\x0b\x1c\x00 \t") for s in re.split(r"\r\n|\r|\n", text)]
    messages: list[list[str]] = []
    lead = False
    for line in lines:
        if not line:
            continue
        if line.startswith("MSH"):
            messages.append([line])
        elif messages:
            messages[-1].append(line)
        else:
            lead = True
    return lead, messages


def _control_id(msh: str) -> str | None:
    """MSH-10 read from the raw segment, for the quarantine key before hl7apy runs;
    only a plain token (letters, digits, ``-_.``) is used."""
    parts = msh.split("|")
    control = parts[9].strip() if len(parts) > 9 else ""
    return control if re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", control) else None


def _offer_patient(snap: _Snapshot, rec: PatientRecord,
                   rank: tuple[bool, dt.datetime, int]) -> None:
    old = snap.patients.get(rec.local_id)
    if old is None or old[0] <= rank:
        snap.patients[rec.local_id] = (rank, rec)


# ----------------------------------------------------------------- segments → records


def _patient(pid: Any, recorded: dt.datetime) -> PatientRecord:
    """PID (v2.5 §3.4.2) as a patient record."""
    local_id = _get(pid, 3)
    if not local_id:
        raise _Unusable("PID-3 patient id missing")
    family, given = _get(pid, 5, 1) or None, _get(pid, 5, 2) or None
    if not family and not given:
        raise _Unusable("PID-5 patient name missing")
    cjk = all(split_name(p)[0] for p in (family, given) if p)
    name = (family or "") + (given or "") if cjk else " ".join(p for p in (family, given) if p)
    if given is None:
        family, given = split_name(name)
        family = family or name
    birth_raw = _get(pid, 7)
    birth = parse_ts(birth_raw, "PID-7").date() if birth_raw else None
    sex = _get(pid, 8)
    if sex and sex not in _SEX:
        raise _Unusable(f"PID-8 sex code {_code(sex)} is not in HL7 table 0001")
    return PatientRecord(
        local_id=local_id, name=name, family=family, given=given,
        gender=_SEX.get(sex, "unknown"), birth_date=birth,
        resident_id=normalise_resident_id(_resident_id(pid)),
        phone=normalise_phone(_get(pid, 13, 1) or _get(pid, 13, 12)
                              or (_get(pid, 13, 6) + _get(pid, 13, 7)) or None),
        address=_address(pid), updated_at=recorded)


def _resident_id(pid: Any) -> str | None:
    for rep in range(len(_fields(pid, 3))):
        if _get(pid, 3, 5, rep=rep).upper() in _RESIDENT_ID_TYPES:
            return _get(pid, 3, 1, rep=rep) or None
    return _get(pid, 19) or None


def _address(pid: Any) -> str | None:
    """PID-11 (XAD) as one line: province, city, district, street in Chinese order."""
    street, other = _get(pid, 11, 1), _get(pid, 11, 2)
    city, state, district = _get(pid, 11, 3), _get(pid, 11, 4), _get(pid, 11, 9)
    parts = [p for p in (state, city, district, street, other) if p]
    if not parts:
        return None
    if any(split_name(p[0])[0] for p in parts):
        return "".join(parts)
    return ", ".join(p for p in (street, other, district, city, state) if p)


def _encounter(pv1: Any, patient: str, m: _Message, snap: _Snapshot) -> EncounterRecord:
    """PV1 (v2.5 §3.4.3) as a visit; A01/A04 without PV1-44 start at the event time, an
    A08 without it keeps the start already known for the visit."""
    local_id = _get(pv1, 19)
    code = _get(pv1, 2)
    kind = _PATIENT_CLASS.get(code)
    if kind is None:
        raise _Unusable(f"PV1-2 patient class {_code(code) if code else '(blank)'} "
                        "is not O, I or E")
    start = _optional_ts(_get(pv1, 44), "PV1-44")
    if start is None:
        known = snap.visits.get(local_id)
        if m.event == "ADT^A08":
            if known is None:
                raise _Unusable("PV1-44 admit date/time missing")
            start = known[1].start
        else:
            start = _optional_ts(_get(m.first("EVN"), 2), "EVN-2") or m.sent
    end = _optional_ts(_get(pv1, 45), "PV1-45")
    if end is not None and end < start:
        raise _Unusable("PV1-45 discharge is before PV1-44 admission")
    department = " ".join(p for p in (_get(pv1, 3, 1), _get(pv1, 10)) if p) or None
    status = "in-progress" if kind == "inpatient" and end is None else "finished"
    return EncounterRecord(local_id=local_id, patient_local_id=patient, kind=kind,  # type: ignore[arg-type]
                           start=start, end=end, department=department,
                           status=status)  # type: ignore[arg-type]


def _status(code: str, what: str) -> str:
    if not code:
        raise _Unusable(f"{what} result status missing")
    status = _RESULT_STATUS.get(code)
    if status is None:
        raise _Unusable(f"{what} result status {_code(code)} is not supported (F, P or C)")
    return status


def _result(obx: Any, ordinal: int, *, report: str, patient: str, visit: str | None,
            fallback: dt.datetime) -> LabResultRecord:
    """OBX (v2.5 §7.4.2) as a lab result."""
    set_id = _get(obx, 1) or str(ordinal)
    code, name = _get(obx, 3, 1), _get(obx, 3, 2)
    if not code:
        raise _Unusable("OBX-3 observation identifier missing")
    loinc = code if _get(obx, 3, 3) == "LN" else None
    if _get(obx, 3, 6) == "LN" and _get(obx, 3, 4):
        loinc = _get(obx, 3, 4)
    name = name or _get(obx, 3, 5)
    if not name:
        raise _Unusable("OBX-3 observation name missing")
    value_type = _get(obx, 2)
    value, numeric = _value(obx, value_type)
    status = _status(_get(obx, 11), "OBX-11")
    effective = _optional_ts(_get(obx, 14), "OBX-14") or fallback
    low = high = text = None
    ref = _get(obx, 7)
    if ref:
        m = _RANGE.fullmatch(ref)
        if m:
            low, high = Decimal(m[1]), Decimal(m[2])
        else:
            text = ref
    flag = _get(obx, 8)
    return LabResultRecord(
        local_id=f"{report}-{set_id}", patient_local_id=patient, encounter_local_id=visit,
        local_code=code, loinc_code=loinc, name=name, value=value, numeric=numeric,
        unit=_get(obx, 6, 1) or _get(obx, 6, 2) or None, reference_low=low,
        reference_high=high, reference_text=text,
        abnormal_flag=flag if flag in _FLAGS else None, effective=effective, status=status,
        report_local_id=report)


def _value(obx: Any, value_type: str) -> tuple[str, bool]:
    """(OBX-5 as text, numeric?) — NM must be a decimal; SN (comparator^number) becomes
    e.g. ``'<0.5'``, and an SN ratio or range (``1^:^40``) is kept as text."""
    if not _fields(obx, 5):
        raise _Unusable("OBX-5 observation value missing")
    if value_type == "SN":
        comparator, first = _get(obx, 5, 1), _get(obx, 5, 2)
        separator, second = _get(obx, 5, 3), _get(obx, 5, 4)
        if not _NUMBER.fullmatch(first) or comparator not in ("", "<", ">", "<=", ">=", "="):
            raise _Unusable("OBX-5 not a structured numeric (SN) value")
        if separator or second:
            return f"{comparator}{first}{separator}{second}", False
        return f"{'' if comparator == '=' else comparator}{first}", True
    value = _get(obx, 5)
    if not value:
        raise _Unusable("OBX-5 observation value missing")
    if value_type in _NUMERIC_TYPES:
        if not _NUMBER.fullmatch(value):
            raise _Unusable("OBX-5 not numeric for NM value")
        try:
            Decimal(value)
        except InvalidOperation:
            raise _Unusable("OBX-5 not numeric for NM value") from None
        return value, True
    if not value_type:
        raise _Unusable("OBX-2 value type missing")
    return value, False
