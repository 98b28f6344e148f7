"""HL7 v2.5 messages as a synthetic site's LIS/HIS interface engine would drop them.

``oru_r01`` and ``adt`` build one message each (segments joined by CR, free text escaped
per v2.5 §2.7); ``write_lis_feed`` writes a laboratory's results as daily batch files
``oru-YYYYMMDD.hl7``, one message per line group (CR inside a message, LF between
messages). Nothing depends on the clock or on randomness: control ids are numbered in
order, so the same orders give the same bytes. What is written here is what
:class:`federation.nodes.adapters.hl7v2.Hl7Adapter` reads back unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from federation.nodes.model import EncounterRecord, LabReportRecord, LabResultRecord, PatientRecord
from federation.synth.writers import write_text_atomic

__all__ = ["adt", "escape", "oru_r01", "write_hl7_file", "write_lis_feed"]

_ENCODING = "^~\\&"
_SEX = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_CLASS = {"outpatient": "O", "inpatient": "I", "emergency": "E"}
_STATUS = {"final": "F", "preliminary": "P", "corrected": "C"}
_ADT_EVENTS = ("A01", "A04", "A08")
_RECEIVER = "FEDERATION^^L"


def escape(text: str) -> str:
    """Free text with the five delimiters escaped (v2.5 §2.7.4); newlines as ``\\.br\\``."""
    out = text.replace("\\", "\\E\\")
    for char, code in (("|", "F"), ("^", "S"), ("&", "T"), ("~", "R")):
        out = out.replace(char, f"\\{code}\\")
    return out.replace("\r\n", "\\.br\\").replace("\n", "\\.br\\").replace("\r", "\\.br\\")


def _ts(moment: dt.datetime | dt.date | None, *, seconds: bool = True) -> str:
    if moment is None:
        return ""
    if isinstance(moment, dt.datetime):
        return moment.strftime("%Y%m%d%H%M%S" if seconds else "%Y%m%d%H%M")
    return moment.strftime("%Y%m%d")


def _segment(name: str, *fields: str) -> str:
    return "|".join((name, *fields)).rstrip("|")


def _msh(facility: str, sent: dt.datetime, event: str, structure: str, control: str) -> str:
    return _segment("MSH", _ENCODING, "LIS" if event.startswith("ORU") else "HIS",
                    escape(facility), "FEDERATION", "", _ts(sent), "",
                    f"{event}^{structure}", control, "P", "2.5", "", "", "", "", "CHN",
                    "UNICODE UTF-8")


def _pid(patient: PatientRecord, facility: str) -> str:
    ids = f"{escape(patient.local_id)}^^^{escape(facility)}^PI"
    if patient.resident_id:
        ids += f"~{escape(patient.resident_id)}^^^CHN^NNCHN"
    if patient.family or patient.given:
        name = f"{escape(patient.family or '')}^{escape(patient.given or '')}"
    else:
        name = escape(patient.name)
    phone = escape(patient.phone) if patient.phone else ""
    address = escape(patient.address) if patient.address else ""
    return _segment("PID", "1", "", ids, "", name, "", _ts(patient.birth_date),
                    _SEX[patient.gender], "", "", address, "", phone)


def _pv1(encounter: EncounterRecord) -> str:
    fields = [""] * 45
    fields[0] = "1"
    fields[1] = _CLASS[encounter.kind]
    fields[2] = escape(encounter.department or "")
    fields[18] = escape(encounter.local_id)
    fields[43] = _ts(encounter.start)
    fields[44] = _ts(encounter.end)
    return _segment("PV1", *fields)


def _number(value: Decimal) -> str:
    return format(value, "f")


def _reference(result: LabResultRecord) -> str:
    if result.reference_low is not None and result.reference_high is not None:
        return f"{_number(result.reference_low)}-{_number(result.reference_high)}"
    if result.reference_text:
        return escape(result.reference_text)
    if result.reference_low is not None:
        return f">={_number(result.reference_low)}"
    if result.reference_high is not None:
        return f"<={_number(result.reference_high)}"
    return ""


def _obx(set_id: int, result: LabResultRecord) -> str:
    value = result.value.strip()
    if not result.numeric:
        value_type, value_text = "ST", escape(result.value)
    elif value[:1] in "<>":
        comparator = value[:2] if value[1:2] == "=" else value[:1]
        value_type, value_text = "SN", f"{comparator}^{value[len(comparator):].strip()}"
    else:
        value_type, value_text = "NM", value
    code = f"{escape(result.local_code)}^{escape(result.name)}^L"
    if result.loinc_code:
        code += f"^{escape(result.loinc_code)}^^LN"
    return _segment("OBX", str(set_id), value_type, code, "", value_text,
                    escape(result.unit or ""), _reference(result), result.abnormal_flag or "",
                    "", "", _STATUS[result.status], "", "", _ts(result.effective))


def oru_r01(patient: PatientRecord, report: LabReportRecord,
            results: Sequence[LabResultRecord], *, sending_facility: str,
            control_id: str) -> str:
    """One ORU^R01 v2.5 message: MSH (sent at ``report.issued``), PID, PV1 when the
    report belongs to a visit, OBR and one OBX per result in the given order. The OBX
    set ids must match the results' local ids ``{report}-{n}`` for a round trip, so
    results are numbered by their id suffix when it is a number, else by position."""
    segments = [_msh(sending_facility, report.issued, "ORU^R01", "ORU_R01", control_id),
                _pid(patient, sending_facility)]
    if report.encounter_local_id:
        segments.append(_segment("PV1", "1", "", *[""] * 16,
                                 escape(report.encounter_local_id)))
    obr = [""] * 25
    obr[0] = "1"
    obr[2] = escape(report.local_id)
    obr[3] = f"{escape(report.local_code or '')}^{escape(report.name)}^L"
    obr[6] = _ts(report.effective)
    obr[21] = _ts(report.issued)
    obr[24] = _STATUS[report.status]
    segments.append(_segment("OBR", *obr))
    for n, result in enumerate(results, start=1):
        suffix = result.local_id.removeprefix(f"{report.local_id}-")
        segments.append(_obx(int(suffix) if suffix.isdigit() else n, result))
    return "\r".join(segments)


def adt(event: str, patient: PatientRecord, encounter: EncounterRecord | None, *,
        sending_facility: str, control_id: str, sent_at: dt.datetime) -> str:
    """One ADT^A01 / A04 / A08 v2.5 message (structure ADT_A01) with EVN-2 = ``sent_at``."""
    if event not in _ADT_EVENTS:
        raise ValueError(f"ADT event must be one of {_ADT_EVENTS}, not {event!r}")
    segments = [_msh(sending_facility, sent_at, f"ADT^{event}", "ADT_A01", control_id),
                _segment("EVN", event, _ts(sent_at)),
                _pid(patient, sending_facility)]
    if encounter is not None:
        segments.append(_pv1(encounter))
    return "\r".join(segments)


def write_hl7_file(path: Path, messages: Sequence[str], *, encoding: str = "utf-8") -> None:
    """Messages (CR inside) into one file, LF between them, written atomically."""
    write_text_atomic(Path(path), "\n".join(messages) + "\n", encoding=encoding)


def write_lis_feed(folder: Path,
                   orders: Sequence[tuple[PatientRecord, LabReportRecord,
                                          Sequence[LabResultRecord]]],
                   *, facility: str, control_prefix: str = "LIS") -> list[Path]:
    """The orders as ORU^R01 daily batches ``folder/oru-YYYYMMDD.hl7`` (by issue date);
    control ids ``{prefix}{n:08d}`` follow the order of ``orders``. Returns the files
    written, in name order."""
    batches: dict[dt.date, list[str]] = {}
    for n, (patient, report, results) in enumerate(orders, start=1):
        message = oru_r01(patient, report, results, sending_facility=facility,
                          control_id=f"{control_prefix}{n:08d}")
        batches.setdefault(report.issued.date(), []).append(message)
    paths = []
    for day in sorted(batches):
        path = Path(folder) / f"oru-{day:%Y%m%d}.hl7"
        write_hl7_file(path, batches[day])
        paths.append(path)
    return paths
