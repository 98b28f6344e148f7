"""Hl7Adapter: what federation.synth.hl7_feed writes reads back unchanged; ADT updates
demographics and visits; every kind of bad input is quarantined with a specific reason
while the good messages beside it still load, and no patient data reaches the log."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import SourceError
from federation.nodes.adapters.hl7v2 import Hl7Adapter, parse_ts, unescape
from federation.nodes.fhir_clinical import lab_report_to_fhir, lab_result_to_fhir
from federation.nodes.model import (
    EncounterRecord,
    LabReportRecord,
    LabResultRecord,
    PatientQuery,
    PatientRecord,
)
from federation.synth.hl7_feed import adt, escape, oru_r01, write_hl7_file, write_lis_feed

FACILITY = "县医院LIS"
ISSUED = dt.datetime(2024, 5, 3, 9, 30)
DRAWN = dt.datetime(2024, 5, 3, 7, 5)


def make_patient(**overrides: object) -> PatientRecord:
    values: dict[str, object] = dict(
        local_id="P0001", name="王秀英", family="王", given="秀英", gender="female",
        birth_date=dt.date(1958, 11, 2), resident_id="110101195811021228",
        phone="13812345678", address="河北省保定市莲池区东风路18号")
    values.update(overrides)
    return PatientRecord(**values)  # type: ignore[arg-type]


def make_report(**overrides: object) -> tuple[LabReportRecord, list[LabResultRecord]]:
    report_id = str(overrides.pop("local_id", "R20240503001"))
    common = dict(patient_local_id="P0001", encounter_local_id="V9001",
                  report_local_id=report_id, status="final")
    results = [
        LabResultRecord(local_id=f"{report_id}-1", local_code="GLU", loinc_code="2345-7",
                        name="葡萄糖", value="7.82", unit="mmol/L",
                        reference_low=Decimal("3.90"), reference_high=Decimal("6.10"),
                        abnormal_flag="H", effective=DRAWN, **common),  # type: ignore[arg-type]
        LabResultRecord(local_id=f"{report_id}-2", local_code="WBC", name="白细胞计数",
                        value="<0.5", unit="10^9/L", reference_text="<5",
                        abnormal_flag="L", effective=DRAWN + dt.timedelta(minutes=3),
                        **common),  # type: ignore[arg-type]
        LabResultRecord(local_id=f"{report_id}-3", local_code="HBSAG", name="乙肝表面抗原",
                        value="阴性 | (-) ^ 见备注 & 复查~", numeric=False,
                        reference_text="阴性", abnormal_flag=None, effective=DRAWN,
                        **common),  # type: ignore[arg-type]
    ]
    report = LabReportRecord(
        local_id=report_id, patient_local_id="P0001", encounter_local_id="V9001",
        name="生化全套", local_code="BIOCHEM", issued=ISSUED, effective=DRAWN,
        status="final", result_local_ids=tuple(r.local_id for r in results))
    report = dataclasses.replace(report, **overrides)  # type: ignore[arg-type]
    return report, results


def oru(control: str = "LIS00000001", **report_overrides: object) -> str:
    report, results = make_report(**report_overrides)
    return oru_r01(make_patient(), report, results, sending_facility=FACILITY,
                   control_id=control)


def reasons(adapter: Hl7Adapter) -> dict[str, str]:
    return dict(adapter.quarantine)


# ----------------------------------------------------------------- round trip


def test_oru_round_trip_gives_the_same_report_and_results(tmp_path: Path) -> None:
    report, results = make_report()
    paths = write_lis_feed(tmp_path, [(make_patient(), report, results)], facility=FACILITY)
    assert [p.name for p in paths] == ["oru-20240503.hl7"]
    with Hl7Adapter(tmp_path) as adapter:
        assert adapter.quarantine == []
        assert adapter.clinical("P0001") == [report, *results]
        patient = adapter.get_patient("P0001")
    assert patient == dataclasses.replace(make_patient(), updated_at=ISSUED)


def test_feed_is_deterministic_and_grouped_by_issue_day(tmp_path: Path) -> None:
    r1, res1 = make_report(local_id="R1", issued=ISSUED)
    r2, res2 = make_report(local_id="R2", issued=ISSUED + dt.timedelta(days=1))
    orders = [(make_patient(), r1, res1), (make_patient(), r2, res2)]
    first = write_lis_feed(tmp_path / "a", orders, facility=FACILITY, control_prefix="X")
    second = write_lis_feed(tmp_path / "b", orders, facility=FACILITY, control_prefix="X")
    assert [p.name for p in first] == ["oru-20240503.hl7", "oru-20240504.hl7"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert "|X00000002|" in first[1].read_text(encoding="utf-8")
    with Hl7Adapter(tmp_path / "a") as adapter:
        ids = [r.local_id for r in adapter.clinical("P0001")
               if isinstance(r, LabReportRecord)]
    assert ids == ["R1", "R2"]


def test_escape_round_trips_every_delimiter() -> None:
    text = "a|b^c&d~e\\f"
    assert "|" not in escape(text) and unescape(escape(text)) == text


def test_records_map_to_valid_fhir(tmp_path: Path) -> None:
    write_hl7_file(tmp_path / "a.hl7", [oru()])
    with Hl7Adapter(tmp_path) as adapter:
        records = adapter.clinical("P0001")
    report = lab_report_to_fhir("county-a", records[0])  # type: ignore[arg-type]
    DiagnosticReport.model_validate(report)
    observations = [lab_result_to_fhir("county-a", r) for r in records[1:]]  # type: ignore[arg-type]
    for obs in observations:
        Observation.model_validate(obs)
    assert report["result"] == [{"reference": f"Observation/{o['id']}"} for o in observations]
    glucose = observations[0]
    assert {"system": "http://loinc.org", "code": "2345-7"} in glucose["code"]["coding"]
    assert glucose["valueQuantity"]["value"] == 7.82
    assert glucose["referenceRange"][0]["low"]["value"] == 3.9
    assert observations[1]["valueQuantity"]["comparator"] == "<"


@pytest.mark.parametrize(("raw", "expected"), [
    ("20240503", dt.datetime(2024, 5, 3)),
    ("202405030915", dt.datetime(2024, 5, 3, 9, 15)),
    ("20240503091502.1234+0800", dt.datetime(2024, 5, 3, 9, 15, 2)),
])
def test_hl7_timestamps_stay_local_and_naive(raw: str, expected: dt.datetime) -> None:
    assert parse_ts(raw, "MSH-7") == expected


# ----------------------------------------------------------------- ADT


def test_a04_then_a08_updates_demographics_and_search(tmp_path: Path) -> None:
    visit = EncounterRecord(local_id="V1", patient_local_id="P0001", kind="outpatient",
                            start=dt.datetime(2024, 1, 5, 8, 0), department="内科")
    moved = make_patient(phone="13900001111", address="北京市海淀区中关村大街1号")
    t0, t1 = dt.datetime(2024, 1, 5, 8, 0), dt.datetime(2024, 2, 1, 10, 0)
    # the update is filed first: the later MSH-7 still wins
    write_hl7_file(tmp_path / "1.hl7", [adt("A08", moved, None, sending_facility=FACILITY,
                                            control_id="H2", sent_at=t1)])
    write_hl7_file(tmp_path / "2.hl7", [adt("A04", make_patient(), visit,
                                            sending_facility=FACILITY, control_id="H1",
                                            sent_at=t0)])
    with Hl7Adapter(tmp_path) as adapter:
        patient = adapter.get_patient("P0001")
        assert patient == dataclasses.replace(moved, updated_at=t1)
        assert adapter.encounters("P0001") == [visit]
        assert adapter.search_patients(PatientQuery(name="秀英")) == [patient]
        assert adapter.search_patients(PatientQuery(identifier="110101195811021228")) \
            == [patient]
        assert adapter.search_patients(PatientQuery(identifier="P0001")) == [patient]
        assert adapter.search_patients(PatientQuery(phone="+86 139 0000 1111")) == [patient]
        assert adapter.search_patients(PatientQuery(name="李")) == []
        assert adapter.count_patients() == 1
        assert list(adapter.iter_patient_ids()) == ["P0001"]


def test_a01_inpatient_stay_then_discharge_update(tmp_path: Path) -> None:
    admit = EncounterRecord(local_id="ZY001", patient_local_id="P0001", kind="inpatient",
                            start=dt.datetime(2024, 3, 1, 14, 0), department="心内科",
                            status="in-progress")
    discharged = dataclasses.replace(admit, end=dt.datetime(2024, 3, 9, 10, 0),
                                     status="finished")
    write_hl7_file(tmp_path / "a.hl7", [
        adt("A01", make_patient(), admit, sending_facility=FACILITY, control_id="H1",
            sent_at=admit.start),
        adt("A01", make_patient(), discharged, sending_facility=FACILITY, control_id="H2",
            sent_at=discharged.end)])  # type: ignore[arg-type]
    with Hl7Adapter(tmp_path) as adapter:
        assert adapter.quarantine == []
        assert adapter.encounters("P0001") == [discharged]


def test_reloads_when_the_folder_changes(tmp_path: Path) -> None:
    write_hl7_file(tmp_path / "a.hl7", [oru("C1")])
    with Hl7Adapter(tmp_path, recheck_seconds=0) as adapter:
        assert len(adapter.clinical("P0001")) == 4
        write_hl7_file(tmp_path / "b.hl7", [oru("C2", local_id="R2")])
        assert len(adapter.clinical("P0001")) == 8
        (tmp_path / "b.hl7").unlink()
        assert len(adapter.clinical("P0001")) == 4


def test_missing_source_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        Hl7Adapter(tmp_path / "nope")


# ----------------------------------------------------------------- bad input


def _replace_segment(message: str, name: str, new: str | None) -> str:
    segments = [s if not s.startswith(name) else new for s in message.split("\r")]
    return "\r".join(s for s in segments if s is not None)


def _set_field(message: str, segment: str, n: int, value: str, occurrence: int = 0) -> str:
    out, seen = [], 0
    for seg in message.split("\r"):
        if seg.startswith(segment + "|"):
            if seen == occurrence:
                fields = seg.split("|")
                fields += [""] * (n + 1 - len(fields))
                fields[n] = value
                seg = "|".join(fields)
            seen += 1
        out.append(seg)
    return "\r".join(out)


BAD_MESSAGES = [
    ("truncated: PID missing", lambda m: m[:m.index("\rPID")],
     "message truncated: PID segment missing"),
    ("cut inside OBR", lambda m: m[:m.index("\rOBR") + 12], "OBR-4 universal service id missing"),
    ("unsupported type", lambda m: _set_field(m, "MSH", 8, "ADT^A03^ADT_A03"),
     "unsupported message type ADT^A03"),
    ("bad version", lambda m: _set_field(m, "MSH", 11, "3.0"), "unsupported HL7 version"),
    ("bad birth date", lambda m: _set_field(m, "PID", 7, "19581302"), "invalid date in PID-7"),
    ("bad MSH-7", lambda m: _set_field(m, "MSH", 6, "yesterday"), "invalid date in MSH-7"),
    ("no patient id", lambda m: _set_field(m, "PID", 3, ""), "PID-3 patient id missing"),
    ("bad sex", lambda m: _set_field(m, "PID", 8, "X"), "PID-8 sex code X"),
    ("garbage segment", lambda m: m.replace("\rOBR", "\r\x01\x02garbage\rOBR"),
     "malformed segment 4"),
]


@pytest.mark.parametrize(("label", "mangle", "reason"), BAD_MESSAGES,
                         ids=[b[0] for b in BAD_MESSAGES])
def test_bad_message_is_quarantined_and_neighbours_load(tmp_path: Path, label: str,
                                                        mangle, reason: str) -> None:
    bad = mangle(oru("BAD1", local_id="RBAD"))
    write_hl7_file(tmp_path / "mixed.hl7", [oru("OK1"), bad, oru("OK2", local_id="R2")])
    with Hl7Adapter(tmp_path) as adapter:
        found = reasons(adapter)
        reports = {r.local_id for r in adapter.clinical("P0001")
                   if isinstance(r, LabReportRecord)}
    assert reports == {"R20240503001", "R2"}
    keys = [k for k in found if k.startswith("mixed.hl7#2")]
    assert keys, found
    assert reason in found[keys[0]]


@pytest.mark.parametrize(("field", "value", "reason"), [
    (5, "五点六", "OBX-5 not numeric for NM value"),
    (14, "2024-05-03", "invalid date in OBX-14"),
    (11, "Z", "OBX-11 result status Z is not supported"),
    (3, "", "OBX-3 observation identifier missing"),
])
def test_bad_obx_quarantines_only_that_result(tmp_path: Path, field: int, value: str,
                                              reason: str) -> None:
    write_hl7_file(tmp_path / "a.hl7", [_set_field(oru(), "OBX", field, value, occurrence=0)])
    with Hl7Adapter(tmp_path) as adapter:
        records = adapter.clinical("P0001")
        found = reasons(adapter)
    assert list(found) == ["a.hl7#1/LIS00000001#obx-1"]
    assert found["a.hl7#1/LIS00000001#obx-1"].startswith(reason)
    report = records[0]
    assert isinstance(report, LabReportRecord)
    assert report.result_local_ids == ("R20240503001-2", "R20240503001-3")
    assert [r.local_id for r in records[1:]] == list(report.result_local_ids)


def test_binary_file_is_quarantined(tmp_path: Path) -> None:
    # 0xFF never starts a GB18030 character, so this is text in neither encoding
    (tmp_path / "junk.hl7").write_bytes(b"PK\x03\x04\x14\x00\xff\xfe\x00MSH|^~\\&|")
    write_hl7_file(tmp_path / "ok.hl7", [oru()])
    with Hl7Adapter(tmp_path) as adapter:
        assert reasons(adapter) == {"junk.hl7#0": "file is neither UTF-8 nor GB18030 text"}
        assert len(adapter.clinical("P0001")) == 4


def test_text_file_without_msh(tmp_path: Path) -> None:
    (tmp_path / "notes.hl7").write_text("患者王秀英 血糖 7.8\n", encoding="utf-8")
    with Hl7Adapter(tmp_path) as adapter:
        assert reasons(adapter) == {"notes.hl7#1": "not an HL7 v2 message (no MSH segment)"}


def test_gb18030_file_loads(tmp_path: Path) -> None:
    message = oru().replace("UNICODE UTF-8", "GB 18030-2000")
    write_hl7_file(tmp_path / "gb.hl7", [message], encoding="gb18030")
    with pytest.raises(UnicodeDecodeError):
        (tmp_path / "gb.hl7").read_bytes().decode("utf-8")
    with Hl7Adapter(tmp_path) as adapter:
        assert adapter.quarantine == []
        assert adapter.get_patient("P0001").name == "王秀英"  # type: ignore[union-attr]
        assert adapter.clinical("P0001")[0].name == "生化全套"  # type: ignore[union-attr]


def test_crlf_and_lf_segment_separators(tmp_path: Path) -> None:
    text = oru("C1").replace("\r", "\r\n") + "\r\n" + oru("C2", local_id="R2").replace("\r", "\n")
    (tmp_path / "a.hl7").write_text(text, encoding="utf-8", newline="")
    with Hl7Adapter(tmp_path) as adapter:
        assert adapter.quarantine == []
        assert len(adapter.clinical("P0001")) == 8


def test_duplicate_control_id_is_quarantined_and_not_duplicated(tmp_path: Path) -> None:
    write_hl7_file(tmp_path / "a.hl7", [oru("C1")])
    write_hl7_file(tmp_path / "b.hl7", [oru("C1"), oru("C1", local_id="R9")])
    with Hl7Adapter(tmp_path) as adapter:
        assert reasons(adapter) == {
            "b.hl7#1/C1": "duplicate message control id (first at a.hl7#1/C1)",
            "b.hl7#2/C1": "duplicate message control id (first at a.hl7#1/C1)"}
        assert len(adapter.clinical("P0001")) == 4


def test_corrected_resend_replaces_the_report(tmp_path: Path) -> None:
    report, results = make_report()
    fixed = [dataclasses.replace(results[0], value="7.20", status="corrected")]
    corrected = dataclasses.replace(report, status="corrected",
                                    issued=ISSUED + dt.timedelta(hours=2),
                                    result_local_ids=(fixed[0].local_id,))
    write_hl7_file(tmp_path / "a.hl7", [
        oru("C1"),
        oru_r01(make_patient(), corrected, fixed, sending_facility=FACILITY, control_id="C2")])
    with Hl7Adapter(tmp_path) as adapter:
        assert adapter.clinical("P0001") == [corrected, *fixed]


def test_quarantine_log_has_no_patient_data(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    patient = make_patient()
    write_hl7_file(tmp_path / "a.hl7", [
        _set_field(oru("C1"), "PID", 7, "19581302"),
        _set_field(oru("C2", local_id="R2"), "OBX", 5, "七点八"),
        mangle_pid_truncated(oru("C3", local_id="R3"))])
    with caplog.at_level(logging.WARNING, logger="federation.node.adapter"):
        with Hl7Adapter(tmp_path) as adapter:
            assert len(adapter.quarantine) == 3
    assert len(caplog.records) == 3
    text = caplog.text + repr(adapter.quarantine)
    for secret in (patient.name, patient.family, patient.given, patient.resident_id,
                   patient.phone, "19581302", "七点八", "东风路"):
        assert secret not in text


def mangle_pid_truncated(message: str) -> str:
    return message[:message.index("\rPID") + 12]


def test_the_folder_is_looked_at_once_per_recheck_interval(tmp_path: Path) -> None:
    write_hl7_file(tmp_path / "a.hl7", [oru("C1")])
    with Hl7Adapter(tmp_path, recheck_seconds=3600) as adapter:
        write_hl7_file(tmp_path / "b.hl7", [oru("C2", local_id="R2")])
        assert len(adapter.clinical("P0001")) == 4          # the snapshot is still trusted
        stamp = adapter.source_stamp()                       # the node's scan loop asks
        assert len(adapter.clinical("P0001")) == 8          # and the scan then sees it
        assert adapter._load().stamp == stamp


# ----------------------------------------------------------------- fuzzing

_HL7_NOISE = st.text(alphabet=st.sampled_from(list("|^~\\&\r\n\x00\x0b\x1c 0123456789.-+TZ"
                                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ王秀英血糖")),
                     max_size=30)


@st.composite
def _mangled_oru(draw: st.DrawFn) -> str:
    """A valid ORU^R01 with random damage: fields replaced by delimiter soup, cut at any
    point, segments dropped or repeated."""
    segments = oru("FUZZ1", local_id="RFUZZ").split("\r")
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(segments) - 1))
        fields = segments[i].split("|")
        n = draw(st.integers(0, len(fields) + 2))
        fields += [""] * (n + 1 - len(fields))
        fields[n] = draw(_HL7_NOISE)
        segments[i] = "|".join(fields)
    if draw(st.booleans()):
        del segments[draw(st.integers(0, len(segments) - 1))]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(segments) - 1))
        segments.insert(i, segments[i])
    message = "\r".join(segments)
    if draw(st.booleans()):
        message = message[:draw(st.integers(0, len(message)))]
    return message


@settings(max_examples=150, deadline=None)
@given(_mangled_oru())
def test_fuzzed_messages_never_crash_the_adapter(message: str) -> None:
    """Whatever arrives, the adapter loads: the damaged message is read or quarantined
    with a reason, and the good message after it is read whole (so is the one before,
    unless the damage took the MSH: segments without one continue the message before)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        write_hl7_file(path / "feed.hl7", [oru("OK1"), message, oru("OK2", local_id="R2")])
        with Hl7Adapter(path) as adapter:
            records = adapter.clinical("P0001")
            adapter.search_patients(PatientQuery())
            found = reasons(adapter)
    reports = {r.local_id for r in records if isinstance(r, LabReportRecord)}
    assert "R2" in reports                      # the next message is read whole
    if message.startswith("MSH|"):
        assert "R20240503001" in reports
        assert not any(key.split("/")[0] == "feed.hl7#1" for key in found), found
    assert all(isinstance(why, str) and why.strip() for why in found.values())
