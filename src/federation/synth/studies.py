"""Synthetic consult material for the demo and tests: small real DICOM files (made with
``pydicom``: a CT-like series with pixel data) and 12-lead ECG waveforms (500 Hz CSV),
written as study folders a node serves (``<studies_dir>/<study id>/``, with the
``study.json`` that names the patient; :mod:`federation.consult.studies`)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["write_dicom_study", "write_ecg_study", "write_blob_study"]

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _meta(folder: Path, patient_id: str, kind: str, description: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text(json.dumps(
        {"patient_id": patient_id, "kind": kind, "description": description},
        ensure_ascii=False), encoding="utf-8")


def write_dicom_study(root: Path, study_id: str, patient_id: str, *, slices: int = 4,
                      size: int = 64, seed: int = 0) -> Path:
    """A CT series of ``slices`` images of ``size``² 16-bit pixels (PS3.3 A.3 CT Image
    IOD, explicit VR little endian), one ``.dcm`` per instance."""
    folder = Path(root) / study_id
    _meta(folder, patient_id, "dicom", f"CT chest, {slices} slices (synthetic)")
    rng = np.random.default_rng(seed)
    study_uid, series_uid = generate_uid(), generate_uid()
    when = dt.datetime(2026, 11, 1, 9, 30)
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"ct-{i + 1:03d}.dcm"), {}, file_meta=meta,
                         preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName = patient_id, "ANONYMOUS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate, ds.StudyTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
        ds.Modality, ds.StudyDescription = "CT", "CT chest"
        ds.InstanceNumber, ds.SliceLocation = i + 1, float(i * 5)
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        yy, xx = np.mgrid[0:size, 0:size]
        body = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.4) ** 2) * 1000
        pixels = (body + rng.integers(0, 60, (size, size))).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"ct-{i + 1:03d}.dcm", enforce_file_format=True)
    return folder


def write_ecg_study(root: Path, study_id: str, patient_id: str, *, seconds: int = 10,
                    rate_hz: int = 500, heart_rate: int = 72) -> Path:
    """A resting 12-lead ECG: ``seconds`` of samples at ``rate_hz`` in microvolts, as CSV
    (one column per lead), with a plausible PQRST shape per beat."""
    folder = Path(root) / study_id
    _meta(folder, patient_id, "ecg", f"resting 12-lead ECG, {seconds} s at {rate_hz} Hz")
    beat = 60.0 / heart_rate
    gains = np.linspace(0.6, 1.4, len(LEADS))
    with (folder / "ecg-12lead.csv").open("w", encoding="utf-8") as f:
        f.write("t_ms," + ",".join(LEADS) + "\n")
        for n in range(seconds * rate_hz):
            t = n / rate_hz
            phase = (t % beat) / beat
            v = (120 * math.exp(-((phase - 0.2) / 0.03) ** 2)          # P
                 + 1000 * math.exp(-((phase - 0.35) / 0.012) ** 2)     # R
                 - 150 * math.exp(-((phase - 0.38) / 0.01) ** 2)       # S
                 + 250 * math.exp(-((phase - 0.6) / 0.05) ** 2))       # T
            f.write(f"{n * 1000 // rate_hz}," + ",".join(f"{v * g:.0f}" for g in gains) + "\n")
    return folder


def write_blob_study(root: Path, study_id: str, patient_id: str, size: int, *,
                     kind: str = "slide", name: str = "slide.tif") -> Path:
    """One object of ``size`` pseudo-random bytes (a whole-slide image stand-in), written
    in blocks so that even a large one is never built in memory."""
    folder = Path(root) / study_id
    _meta(folder, patient_id, kind, f"{kind} object of {size} bytes (synthetic)")
    rng = np.random.default_rng(size)
    with (folder / name).open("wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
    return folder
