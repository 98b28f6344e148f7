"""What a browser can show of a study object: a DICOM image as a PNG, an ECG waveform as
JSON for a chart, a PNG or JPEG slide image as it is.

The console's case page draws the material of a consult without plug-ins or a DICOM
viewer. :func:`render` turns the bytes of one object (already fetched whole and checked
against its manifest) into a :class:`Rendering`:

* DICOM (PS3.5/PS3.10 file) → 8-bit PNG: the modality LUT (Rescale Slope/Intercept,
  PS3.3 C.11.1) then the VOI window (Window Center/Width, PS3.3 C.11.2.1.2, the LINEAR
  function) from the file or the caller; without either, the frame's full range.
  MONOCHROME1 is inverted so that bright is dense, as on a light box; RGB passes through.
* ECG CSV (a time column ``t_ms`` and one column per lead, microvolts) →
  ``{rate_hz, unit, seconds, leads: {name: [samples…]}}``.
* PNG / JPEG → the bytes as they are, once their signature matches their type.

Anything else is :class:`~federation.errors.UnsupportedMediaType`, naming what can be
viewed. The PNG is written here with ``zlib`` and ``struct`` (:func:`png`); no imaging
library is needed. Pure: no I/O, no HTTP.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import orjson
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from federation.errors import InvalidInput, UnsupportedMediaType

__all__ = ["VIEWABLE", "ViewOptions", "Rendering", "render", "render_dicom", "ecg_waveform",
           "png", "window"]

#: content type of a study object → what the browser is given
VIEWABLE = {"application/dicom": "DICOM image as PNG",
            "text/csv": "ECG waveform as JSON",
            "image/png": "PNG image", "image/jpeg": "JPEG image"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAGIC = {"image/png": PNG_SIGNATURE, "image/jpeg": b"\xff\xd8\xff"}
#: a time column's name → how many of its units make a second
_TIME_COLUMNS = {"t_ms": 1000.0, "time_ms": 1000.0, "t_s": 1.0, "time_s": 1.0}
ECG_UNIT = "uV"            # UCUM microvolt


@dataclass(frozen=True, slots=True)
class ViewOptions:
    """What the viewer asked for: ``frame`` (1-based, as DICOM numbers frames), the VOI
    window ``wc``/``ww`` (both or neither) for images; ``seconds`` of an ECG."""

    frame: int | None = None
    wc: float | None = None
    ww: float | None = None
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Rendering:
    body: bytes
    content_type: str


def viewable_types() -> str:
    return ", ".join(f"{what} ({t})" for t, what in VIEWABLE.items())


def check_viewable(content_type: str, name: str) -> None:
    """UnsupportedMediaType unless objects of ``content_type`` can be rendered."""
    if content_type not in VIEWABLE:
        raise UnsupportedMediaType(
            f"{name} is {content_type}, which the browser cannot be shown; viewable are "
            f"{viewable_types()}. Download the object itself instead")


def render(content_type: str, data: bytes, options: ViewOptions, name: str) -> Rendering:
    """``data`` (an object of ``content_type``) as the browser is given it."""
    check_viewable(content_type, name)
    image_options = options.frame is not None or options.wc is not None or options.ww is not None
    if content_type == "application/dicom":
        if options.seconds is not None:
            raise InvalidInput("'seconds' applies to ECG waveforms, not to DICOM images")
        return Rendering(render_dicom(data, frame=options.frame or 1, wc=options.wc,
                                      ww=options.ww, name=name), "image/png")
    if image_options:
        raise InvalidInput("'frame', 'wc' and 'ww' apply to DICOM images only")
    if content_type == "text/csv":
        return Rendering(orjson.dumps(ecg_waveform(data, seconds=options.seconds, name=name)),
                         "application/json")
    if options.seconds is not None:
        raise InvalidInput("'seconds' applies to ECG waveforms only")
    if not data.startswith(_MAGIC[content_type]):
        raise UnsupportedMediaType(f"{name} is recorded as {content_type} but its bytes are "
                                   "not such an image; it cannot be shown")
    return Rendering(data, content_type)


# ------------------------------------------------------------------------------ DICOM


def render_dicom(data: bytes, *, frame: int = 1, wc: float | None = None,
                 ww: float | None = None, name: str = "the object") -> bytes:
    """One frame of a DICOM image as a PNG (8-bit grayscale, or RGB for colour)."""
    if (wc is None) != (ww is None):
        raise InvalidInput("give the window as 'wc' and 'ww' together")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, TypeError) as exc:
        raise UnsupportedMediaType(f"{name} is not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise UnsupportedMediaType(f"{name} is a DICOM object without an image "
                                   f"({ds.get('Modality', 'no modality')}); nothing to show")
    try:
        pixels = ds.pixel_array
    except Exception as exc:      # pydicom's decoders raise many kinds
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        raise UnsupportedMediaType(
            f"the image of {name} cannot be decoded here (transfer syntax {syntax}: "
            f"{type(exc).__name__}); download the object and open it in a DICOM viewer"
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= frames:
        raise InvalidInput(f"{name} has {frames} frame(s); frame must be 1 to {frames}")
    if frames > 1:
        pixels = pixels[frame - 1]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "RGB" and pixels.ndim == 3:
        return png(_to_uint8(pixels))
    if pixels.ndim != 2 or not photometric.startswith("MONOCHROME"):
        raise UnsupportedMediaType(f"{name} is {photometric}; grayscale (MONOCHROME1/2) and "
                                   "RGB images can be shown")
    values = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) \
        + float(ds.get("RescaleIntercept", 0) or 0)
    if wc is None or ww is None:
        wc, ww = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if wc is None or ww is None or ww < 1:
        low, high = float(values.min()), float(values.max())
        wc, ww = (low + high + 1) / 2, high - low + 1
    shown = window(values, wc, ww)
    return png(255 - shown if photometric == "MONOCHROME1" else shown)


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, the LINEAR VOI function, onto 0…255."""
    if width < 1:
        raise InvalidInput("the window width must be at least 1")
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    scaled = ((values - (center - 0.5)) / max(width - 1, 1e-9) + 0.5) * 255
    out = np.where(values <= low, 0.0, np.where(values > high, 255.0, scaled))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _first(value: object) -> float | None:
    """The first of a (possibly multi-valued) Window Center/Width, as a number."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    top = float(pixels.max()) or 1.0
    return np.clip(np.rint(pixels.astype(np.float64) * 255 / top), 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG (ISO/IEC 15948): grayscale for an (h, w) array, RGB for (h, w, 3);
    each row with filter type 0, the rows deflated into one IDAT chunk."""
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3
                                                            and pixels.shape[2] == 3)):
        raise ValueError("png() takes uint8 pixels shaped (h, w) or (h, w, 3)")
    height, width = pixels.shape[:2]
    if not height or not width:
        raise ValueError("an image needs at least one pixel")
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if pixels.ndim == 2 else 2, 0, 0, 0)
    return b"".join([PNG_SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(raw, 6)), _chunk(b"IEND", b"")])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data \
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# ------------------------------------------------------------------------------ ECG


def ecg_waveform(data: bytes, *, seconds: float | None = None,
                 name: str = "the object") -> dict[str, object]:
    """An ECG CSV as ``{rate_hz, unit, seconds, samples, leads: {lead: [µV…]}}``, the
    first ``seconds`` only if given. The rate comes from the time column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnsupportedMediaType(f"{name} is not UTF-8 text; not an ECG CSV") from None
    header, _, body = text.partition("\n")
    columns = [c.strip() for c in header.strip().split(",")]
    per_second = _TIME_COLUMNS.get(columns[0].lower())
    if per_second is None or len(columns) < 2:
        raise UnsupportedMediaType(
            f"{name} is not an ECG waveform CSV: it needs a time column "
            f"({' or '.join(_TIME_COLUMNS)}) first and a column per lead")
    try:
        table = np.loadtxt(io.StringIO(body), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise UnsupportedMediaType(f"{name} is not a numeric ECG CSV ({exc})") from None
    if table.shape[0] < 2 or table.shape[1] != len(columns):
        raise UnsupportedMediaType(f"{name} has {table.shape[0]} row(s) of "
                                   f"{table.shape[1]} column(s) under {len(columns)} "
                                   "headings; not an ECG waveform")
    span = (table[-1, 0] - table[0, 0]) / per_second
    if span <= 0:
        raise UnsupportedMediaType(f"{name}: its time column does not increase")
    rate = round((table.shape[0] - 1) / span)
    count = table.shape[0]
    if seconds is not None:
        if seconds <= 0:
            raise InvalidInput("'seconds' must be more than 0")
        count = min(count, max(1, round(seconds * rate)))
    samples = table[:count, 1:]
    whole = bool(np.all(samples == np.rint(samples)))
    values = samples.astype(np.int64) if whole else np.round(samples, 1)
    return {"rate_hz": rate, "unit": ECG_UNIT, "samples": count,
            "seconds": round(count / rate, 3),
            "leads": {lead: values[:, i].tolist() for i, lead in enumerate(columns[1:])}}
