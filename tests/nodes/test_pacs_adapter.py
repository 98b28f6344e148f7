"""PacsStudyListAdapter: DICOM-keyword study lists become ImagingStudyRecords that map to
valid FHIR; bad rows are quarantined with a reason, missing headers are a SourceError."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy

from federation.errors import SourceError
from federation.nodes.adapters.pacs import PacsStudyListAdapter
from federation.nodes.fhir_clinical import imaging_study_to_fhir
from federation.nodes.model import ImagingStudyRecord, PatientQuery

HEADER = ("PatientID,PatientName,PatientBirthDate,PatientSex,StudyInstanceUID,AccessionNumber,"
          "StudyDate,StudyTime,ModalitiesInStudy,StudyDescription,BodyPartExamined,"
          "NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances,AdmissionID")
GOOD = [
    "P0001,王^秀英,19581102,F,1.2.840.113619.2.55.3.1,ACC001,20240503,091502.123,CT\\SR,"
    "胸部CT平扫,CHEST,3,412,ZY001",
    "P0001,王^秀英,19581102,F,1.2.840.113619.2.55.3.2,,20240101,,SR\\DX,胸部正位片,CHEST,1,2,",
    "P0002,,,M,1.2.840.113619.2.55.3.3,ACC003,20231212,0800,US,腹部彩超,ABDOMEN,,,",
]


def write(folder: Path, lines: list[str], *, encoding: str = "utf-8-sig",
          header: str = HEADER) -> Path:
    path = folder / "studies.csv"
    path.write_bytes(("\r\n".join([header, *lines]) + "\r\n").encode(encoding))
    return path


def test_studies_parse_with_encounter_link_and_order(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    with PacsStudyListAdapter(tmp_path) as adapter:
        assert adapter.quarantine == []
        studies = adapter.clinical("P0001")
        assert studies == [
            ImagingStudyRecord(
                local_id="1.2.840.113619.2.55.3.2", patient_local_id="P0001",
                study_uid="1.2.840.113619.2.55.3.2", modality="DX",
                started=dt.datetime(2024, 1, 1), description="胸部正位片", body_part="CHEST",
                number_of_series=1, number_of_instances=2),
            ImagingStudyRecord(
                local_id="ACC001", patient_local_id="P0001", encounter_local_id="ZY001",
                study_uid="1.2.840.113619.2.55.3.1", accession_number="ACC001",
                modality="CT", started=dt.datetime(2024, 5, 3, 9, 15, 2),
                description="胸部CT平扫", body_part="CHEST", number_of_series=3,
                number_of_instances=412),
        ]
        us = adapter.clinical("P0002")[0]
        assert us.started == dt.datetime(2023, 12, 12, 8, 0)  # type: ignore[union-attr]
        assert us.number_of_series is None  # type: ignore[union-attr]
        assert adapter.clinical("nobody") == []


def test_is_not_a_patient_index(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with PacsStudyListAdapter(path) as adapter:
        assert adapter.search_patients(PatientQuery(identifier="P0001")) == []
        assert adapter.get_patient("P0001") is None
        assert adapter.count_patients() == 0
        assert list(adapter.iter_patient_ids()) == []
        assert adapter.encounters("P0001") == []


def test_studies_map_to_valid_fhir(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    with PacsStudyListAdapter(tmp_path) as adapter:
        for study in adapter.clinical("P0001"):
            res = imaging_study_to_fhir("city-1", study)  # type: ignore[arg-type]
            ImagingStudy.model_validate(res)
            assert res["modality"][0]["code"] in ("CT", "DX")


BAD_ROWS = [
    (",张^三,19900101,M,1.2.3.4,ACC9,20240503,,CT,,,,,", "PatientID is blank"),
    ("P9,,,M,1.2.3.4,ACC9,20241332,,CT,,,,,", "StudyDate is not a calendar date"),
    ("P9,,,M,1.2.3.4,ACC9,2024-05-03,,CT,,,,,", "StudyDate '9999-99-99' is not a DICOM DA"),
    ("P9,,19900230,M,1.2.3.4,ACC9,20240503,,CT,,,,,", "PatientBirthDate is not a calendar"),
    ("P9,,,M,1.2.3.4,ACC9,20240503,256000,CT,,,,,", "StudyTime is not a valid time"),
    ("P9,,,M,1.2.3.4,ACC9,20240503,,CT,,,-1,,", "NumberOfStudyRelatedSeries '-9' is not"),
    ("P9,,,M,1.2.3.4,ACC9,20240503,,CT,,,2,many,", "NumberOfStudyRelatedInstances 'aaaa'"),
    ("P9,,,M,1.2.3.4,ACC9,20240503,,SR\\KO,,,,,", "ModalitiesInStudy names no imaging"),
    ("P9,,,M,,,20240503,,CT,,,,,", "StudyInstanceUID and AccessionNumber are both blank"),
    ("P9,,,M,1.2.abc,ACC9,20240503,,CT,,,,,", "StudyInstanceUID is not a DICOM UID"),
    ("P9,,,M,1.2.3.4,ACC001,20240503,,CT,,,,,",
     "duplicate AccessionNumber (first at studies.csv:2)"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS, ids=[r[1][:30] for r in BAD_ROWS])
def test_bad_row_is_quarantined_and_others_load(tmp_path: Path, row: str, reason: str) -> None:
    write(tmp_path, [*GOOD, row])
    with PacsStudyListAdapter(tmp_path) as adapter:
        assert len(adapter.clinical("P0001")) == 2
        assert adapter.clinical("P9") == []
        assert len(adapter.quarantine) == 1
        key, why = adapter.quarantine[0]
    assert key == "studies.csv:5"
    assert why.startswith(reason)


@pytest.mark.parametrize(("header", "missing"), [
    ("PatientName,StudyInstanceUID,StudyDate,ModalitiesInStudy", "PatientID"),
    ("PatientID,StudyDate,ModalitiesInStudy", "StudyInstanceUID or AccessionNumber"),
    ("PatientID,AccessionNumber,StudyTime", "StudyDate, ModalitiesInStudy"),
])
def test_missing_headers_raise_source_error(tmp_path: Path, header: str, missing: str) -> None:
    write(tmp_path, [], header=header)
    with pytest.raises(SourceError) as err:
        PacsStudyListAdapter(tmp_path)
    assert "studies.csv" in err.value.message
    assert err.value.message.endswith(missing)


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        PacsStudyListAdapter(tmp_path)


def test_gb18030_export(tmp_path: Path) -> None:
    write(tmp_path, GOOD, encoding="gb18030")
    with PacsStudyListAdapter(tmp_path) as adapter:
        descriptions = [s.description for s in adapter.clinical("P0001")]  # type: ignore[union-attr]
    assert descriptions == ["胸部正位片", "胸部CT平扫"]


def test_reloads_when_the_file_changes(tmp_path: Path) -> None:
    write(tmp_path, GOOD[:1])
    with PacsStudyListAdapter(tmp_path) as adapter:
        assert len(adapter.clinical("P0001")) == 1
        write(tmp_path, GOOD)
        assert len(adapter.clinical("P0001")) == 2


def test_quarantine_log_has_no_patient_data(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, ["P0009,欧阳^娜娜,19900230,F,1.2.3.9,ACC7,20240503,,CT,,,,,",
                     "P0009,欧阳^娜娜,19900201,F,1.2.3.9,ACC8,20240599,,CT,,,,,"])
    with caplog.at_level(logging.WARNING, logger="federation.node.adapter"):
        with PacsStudyListAdapter(tmp_path) as adapter:
            assert len(adapter.quarantine) == 2
    assert len(caplog.records) == 2
    for secret in ("欧阳", "娜娜", "19900230", "20240599", "P0009"):
        assert secret not in caplog.text
