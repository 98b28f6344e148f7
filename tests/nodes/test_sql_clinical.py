"""Clinical tables through the declarative SQL mapping: read back, mapped to FHIR,
bad rows quarantined, mapping mistakes named by file and line."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from federation.errors import ConfigError, InvalidInput, SourceError
from federation.nodes import fhir_clinical as fc
from federation.nodes.adapters import SqlAdapter
from federation.nodes.adapters.base import record_fields, record_from_fields
from federation.nodes.adapters.sql import CLINICAL_SECTIONS, MAPPINGS_DIR, load_mapping
from federation.nodes.model import (
    AllergyRecord,
    DocumentRecord,
    LabReportRecord,
    LabResultRecord,
    MedicationRecord,
    VitalSignRecord,
)
from federation.synth import ConsortiumManifest, generate_consortium

TO_FHIR: dict[type, Callable[[str, Any], dict[str, Any]]] = {
    LabReportRecord: fc.lab_report_to_fhir, LabResultRecord: fc.lab_result_to_fhir,
    VitalSignRecord: fc.vital_sign_to_fhir, MedicationRecord: fc.medication_to_fhir,
    AllergyRecord: fc.allergy_to_fhir, DocumentRecord: fc.document_to_fhir}
SECTION_OF = {cls: n for n, cls in enumerate(CLINICAL_SECTIONS.values())}


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> ConsortiumManifest:
    return generate_consortium(tmp_path_factory.mktemp("consortium"), seed=11, people=120)


def _adapter(manifest: ConsortiumManifest, site: str, mapping: str | Path | None = None
             ) -> SqlAdapter:
    spec = manifest.site(site)
    return SqlAdapter(spec.source_path, load_mapping(mapping or spec.mapping or ""))


@pytest.mark.parametrize("site", ["city-1", "county-a", "county-b"])
def test_clinical_rows_read_back_and_map_to_fhir(consortium: ConsortiumManifest,
                                                 site: str) -> None:
    kinds: Counter[str] = Counter()
    with _adapter(consortium, site) as adapter:
        for pid in adapter.iter_patient_ids():
            records = adapter.clinical(pid)
            order = [SECTION_OF[type(r)] for r in records]
            assert order == sorted(order)                  # by section first
            for rec in records:
                assert rec.patient_local_id == pid
                resource = TO_FHIR[type(rec)](site, rec)
                kinds[resource["resourceType"]] += 1
        planted = [key for key, _ in adapter.quarantine]
    expected = {"Observation", "MedicationRequest", "DocumentReference"}
    if site != "county-b":
        expected.add("DiagnosticReport")                   # county-b's labs come by HL7
    assert expected <= set(kinds)
    # only the vital sign the generator planted with month 13 (county-b) is refused
    assert [key.split(":")[0] for key in planted] == (
        ["vital_signs"] if site == "county-b" else [])


def test_reports_list_their_results_via_the_result_rows(consortium: ConsortiumManifest) -> None:
    with _adapter(consortium, "city-1") as adapter:
        for pid in adapter.iter_patient_ids():
            records = adapter.clinical(pid)
            results = {r.local_id: r for r in records if isinstance(r, LabResultRecord)}
            for report in (r for r in records if isinstance(r, LabReportRecord)):
                assert report.result_local_ids
                assert all(results[i].report_local_id == report.local_id
                           for i in report.result_local_ids)
            if results:
                return
    pytest.fail("no patient with laboratory results")


def test_values_are_typed_and_mapped(consortium: ConsortiumManifest) -> None:
    with _adapter(consortium, "city-1") as adapter:
        records = [r for pid in adapter.iter_patient_ids() for r in adapter.clinical(pid)]
    texts = [r for r in records if isinstance(r, LabResultRecord) and not r.numeric]
    assert texts and {r.value for r in texts} >= {"阴性"}
    bp = next(r for r in records if isinstance(r, VitalSignRecord) and r.kind == "blood-pressure")
    assert isinstance(bp.value, Decimal) and bp.diastolic is not None
    assert isinstance(bp.effective, dt.datetime)
    assert {r.status for r in records if isinstance(r, MedicationRecord)} <= {
        "active", "stopped", "completed"}


def test_vendor_b_vital_with_a_bad_date_is_quarantined(consortium: ConsortiumManifest,
                                                       tmp_path: Path) -> None:
    spec = consortium.site("county-b")
    db = tmp_path / "his.sqlite"
    shutil.copy(spec.source_path, db)
    conn = sqlite3.connect(db)
    hzid, planted = conn.execute("SELECT hzid, jlid FROM t_tzjl WHERE substr(clsj, 5, 2) = '13'"
                                 ).fetchone()
    total = conn.execute("SELECT COUNT(*) FROM t_tzjl WHERE hzid = ?", (hzid,)).fetchone()[0]
    conn.close()
    with SqlAdapter(db, load_mapping("vendor_b")) as adapter:
        vitals = [r for r in adapter.clinical(str(hzid)) if isinstance(r, VitalSignRecord)]
        assert len(vitals) == total - 1
        assert all(r.local_id != str(planted) for r in vitals)
        ((key, reason),) = adapter.quarantine
    assert key == f"vital_signs:{planted}"
    assert "effective" in reason and "calendar date" in reason


def _edited_mapping(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    text = (MAPPINGS_DIR / "vendor_a.toml").read_text(encoding="utf-8")
    assert text.count(old) == 1
    path = tmp_path / "vendor_a.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    line = text[:text.index(old)].count("\n") + 1
    return path, line


def test_missing_column_names_file_and_line(consortium: ConsortiumManifest,
                                            tmp_path: Path) -> None:
    path, line = _edited_mapping(tmp_path, 'value = "RESULT"', 'value = "RESULT_VALUE"')
    with pytest.raises(SourceError) as info:
        _adapter(consortium, "city-1", path)
    assert str(info.value).startswith(
        f'vendor_a.toml line {line}: [lab_results.columns] value = "RESULT_VALUE": '
        "table LAB_RESULT has no column RESULT_VALUE")


def test_missing_table_names_file_and_line(consortium: ConsortiumManifest,
                                           tmp_path: Path) -> None:
    path, line = _edited_mapping(tmp_path, 'table = "ORDERS"', 'table = "ORDERS_HIST"')
    with pytest.raises(SourceError, match=rf"^vendor_a.toml line {line}: \[medications\] "
                       r"table = \"ORDERS_HIST\": .* has no table 'ORDERS_HIST'"):
        _adapter(consortium, "city-1", path)


def test_unknown_record_field_names_file_and_line(tmp_path: Path) -> None:
    path, line = _edited_mapping(tmp_path, 'dose_unit = "DOSAGE_UNITS"',
                                 'dosage_unit = "DOSAGE_UNITS"')
    with pytest.raises(ConfigError, match=rf"^vendor_a.toml line {line}: "
                       r"'medications.columns.dosage_unit' is not a record field"):
        load_mapping(path)


def test_unknown_section_and_missing_required_field(tmp_path: Path) -> None:
    path, line = _edited_mapping(tmp_path, "[documents]\n", "[document]\n")
    with pytest.raises(ConfigError, match=rf"line {line}: section \[document\]"):
        load_mapping(path)
    path, _ = _edited_mapping(tmp_path, 'drug_name = "ORDER_TEXT"\n', "")
    with pytest.raises(ConfigError, match=r"'medications.columns.drug_name' is required"):
        load_mapping(path)


# ----------------------------------------------------------------- record_from_fields

_VITAL = {"local_id": "1", "patient_local_id": "P1", "kind": "heart-rate", "value": "72",
          "effective": "2023-05-06 07:08"}


def test_record_from_fields_converts_by_type() -> None:
    rec = record_from_fields(VitalSignRecord, _VITAL | {"kind": "脉搏", "local_id": 7},
                             values={"kind": {"脉搏": "heart-rate"}})
    assert rec == VitalSignRecord(local_id="7", patient_local_id="P1", kind="heart-rate",
                                  value=Decimal("72"), effective=dt.datetime(2023, 5, 6, 7, 8))
    report = record_from_fields(LabReportRecord, {
        "local_id": "R", "patient_local_id": "P", "name": "血常规", "issued": "20230506120000",
        "result_local_ids": "R-1, R-2;R-3 ", "status": ""})
    assert report.result_local_ids == ("R-1", "R-2", "R-3") and report.status == "final"
    result = record_from_fields(LabResultRecord, {
        "local_id": "R-1", "patient_local_id": "P", "local_code": "PRO", "name": "尿蛋白",
        "value": "阴性", "numeric": "C", "effective": "2023/05/06 08:00"},
        values={"numeric": {"C": "false"}})
    assert result.numeric is False
    assert record_fields(VitalSignRecord)["effective"] is True
    assert record_fields(VitalSignRecord)["unit"] is False


@pytest.mark.parametrize(("change", "problem"), [
    ({"effective": " "}, "field 'effective' is blank"),
    ({"kind": "血压计"}, "field 'kind' code is not in the mapping"),
    ({"value": "七十二"}, "field 'value' .* is not a decimal number"),
    ({"value": "NaN"}, "field 'value' .* is not a decimal number"),
    ({"effective": "2023-02-30 08:00"}, "field 'effective' .* calendar date"),
    ({"local_id": None}, "field 'local_id' is blank"),
])
def test_record_from_fields_refuses_bad_rows(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem) as info:
        record_from_fields(VitalSignRecord, _VITAL | change)
    assert "七十二" not in str(info.value) and "血压计" not in str(info.value)


def test_record_from_fields_refuses_a_bad_yes_no_value() -> None:
    with pytest.raises(InvalidInput, match="field 'numeric' .* yes/no"):
        record_from_fields(LabResultRecord, {
            "local_id": "R-1", "patient_local_id": "P", "local_code": "GLU", "name": "葡萄糖",
            "value": "5.1", "numeric": "maybe", "effective": "2023-05-06"})
