"""Renderings for the browser, without transports: the PNG writer decodes back to the
pixels it was given; a synthetic CT renders bright where the body is and dark outside,
with rescale and window applied as DICOM says; frames are chosen; an ECG CSV becomes 12
leads of 5000 samples at 500 Hz; what cannot be viewed is refused, naming what can."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import orjson
import pydicom
import pytest

from federation.consult.render import ViewOptions, ecg_waveform, png, render, render_dicom
from federation.errors import InvalidInput, UnsupportedMediaType
from federation.synth.studies import LEADS, write_dicom_study, write_ecg_study


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for what :func:`png` writes (8-bit, filter 0), checking the
    signature, every chunk's CRC and the IHDR."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        at += 12 + length
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, comp, filt, lace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, lace) == (8, 0, 0, 0) and colour in (0, 2)
    channels = 1 if colour == 0 else 3
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert not rows[:, 0].any(), "every row uses filter type 0"
    pixels = rows[:, 1:]
    return pixels if channels == 1 else pixels.reshape(height, width, 3)


def test_png_round_trips_grayscale_and_rgb() -> None:
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, (13, 29), dtype=np.uint8)
    assert np.array_equal(decode_png(png(gray)), gray)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(png(rgb)), rgb)
    with pytest.raises(ValueError):
        png(gray.astype(np.uint16))


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("render")
    folder = write_dicom_study(root, "ct-1", "p-1", slices=1, size=48)
    return (folder / "ct-001.dcm").read_bytes()


def test_a_synthetic_ct_renders_bright_body_on_dark_background(ct: bytes) -> None:
    shown = render("application/dicom", ct, ViewOptions(), "ct-001.dcm")
    assert shown.content_type == "image/png"
    pixels = decode_png(shown.body)
    ds = pydicom.dcmread(io.BytesIO(ct))
    assert pixels.shape == (ds.Rows, ds.Columns) == (48, 48)
    assert pixels[20:28, 20:28].min() > 200           # the body (≈1000) is bright
    assert pixels[:4, :4].max() < 30                  # the air around it (≈0–60) dark


def _edited(ct: bytes, **fields) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(ct))
    for key, value in fields.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_rescale_then_the_files_window_or_the_callers(ct: bytes) -> None:
    # stored 0…60 (air) and ≈1000 (body) become -1024… and ≈-24 HU once rescaled; a lung
    # window about -500 shows the body near white and the air black only if the rescale
    # is applied first (on the stored values every pixel would be above the window)
    hu = _edited(ct, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=-500,
                 WindowWidth=1000)
    pixels = decode_png(render_dicom(hu))
    assert pixels[20:28, 20:28].min() > 230 and pixels[:4, :4].max() < 20
    # the caller's window wins: a narrow one about the air shows the air in grays
    narrow = decode_png(render_dicom(hu, wc=-994, ww=120))
    assert 20 < narrow[:4, :4].mean() < 235 and narrow[20:28, 20:28].min() == 255
    with pytest.raises(InvalidInput, match="'wc' and 'ww' together"):
        render_dicom(hu, wc=40)
    inverted = decode_png(render_dicom(_edited(ct, PhotometricInterpretation="MONOCHROME1")))
    assert inverted[20:28, 20:28].max() < 55 and inverted[:4, :4].min() > 225


def test_a_frame_of_a_multi_frame_image(ct: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(ct))
    first = ds.pixel_array
    second = (first.max() - first).astype(first.dtype)        # a negative of the first
    multi = _edited(ct, NumberOfFrames=2, PixelData=first.tobytes() + second.tobytes())
    one, two = (decode_png(render_dicom(multi, frame=f)) for f in (1, 2))
    assert one[24, 24] > 200 and two[24, 24] < 55
    with pytest.raises(InvalidInput, match="has 2 frame"):
        render_dicom(multi, frame=3)


@pytest.fixture(scope="module")
def ecg_csv(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = write_ecg_study(tmp_path_factory.mktemp("ecg"), "ecg-1", "p-1")
    return (folder / "ecg-12lead.csv").read_bytes()


def test_an_ecg_csv_becomes_twelve_leads_of_samples(ecg_csv: bytes) -> None:
    shown = render("text/csv", ecg_csv, ViewOptions(), "ecg-12lead.csv")
    assert shown.content_type == "application/json"
    body = orjson.loads(shown.body)
    assert (body["rate_hz"], body["unit"], body["samples"], body["seconds"]) == (
        500, "uV", 5000, 10.0)
    assert list(body["leads"]) == list(LEADS)
    assert all(len(v) == 5000 for v in body["leads"].values())
    table = np.loadtxt(io.StringIO(ecg_csv.decode()), delimiter=",", skiprows=1)
    assert body["leads"]["V6"] == table[:, 12].astype(int).tolist()
    assert max(body["leads"]["II"]) > 500              # the R waves are there
    short = ecg_waveform(ecg_csv, seconds=2.5)
    assert short["samples"] == 1250 and len(short["leads"]["I"]) == 1250


@pytest.mark.parametrize(("content_type", "data", "options", "error", "match"), [
    ("image/tiff", b"II*\0", ViewOptions(), UnsupportedMediaType, "DICOM image as PNG"),
    ("application/dicom", b"not dicom at all", ViewOptions(), UnsupportedMediaType,
     "not a readable DICOM"),
    ("image/png", b"<html>", ViewOptions(), UnsupportedMediaType, "not such an image"),
    ("text/csv", b"name,phone\nx,1\n", ViewOptions(), UnsupportedMediaType, "time column"),
    ("text/csv", b"t_ms,I\n0,1\n2,zz\n", ViewOptions(), UnsupportedMediaType, "numeric"),
    ("text/csv", b"t_ms,I\n0,1\n2,3\n", ViewOptions(frame=1), InvalidInput, "DICOM images"),
    ("image/png", b"\x89PNG\r\n\x1a\n", ViewOptions(seconds=1), InvalidInput, "ECG"),
])
def test_what_cannot_be_shown_is_refused_clearly(content_type, data, options, error,
                                                 match) -> None:
    with pytest.raises(error, match=match):
        render(content_type, data, options, "obj")


def test_png_and_jpeg_pass_through(tmp_path: Path) -> None:
    image = png(np.full((3, 3), 9, np.uint8))
    assert render("image/png", image, ViewOptions(), "a.png").body == image
    jpeg = b"\xff\xd8\xff\xe0" + b"\0" * 20
    assert render("image/jpeg", jpeg, ViewOptions(), "a.jpg").content_type == "image/jpeg"
