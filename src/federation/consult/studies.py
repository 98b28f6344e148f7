"""Study material too large to send: kept at the origin site, streamed on demand.

A site keeps each study (a DICOM series, an ECG waveform, slide images) as a folder
under its node's ``studies_dir``: the objects (files) and a ``study.json`` naming the
patient (the site's own Patient id), the kind and a description. When a consult is
requested the node describes the study — objects, sizes, the SHA-256 of each object and
of each of its chunks (:class:`StudyManifest`) — and the gateway keeps that manifest with
the consult. Every later read is checked against it, chunk by chunk, at the gateway and
again at the specialist's client; a reader that lost its stream asks again from the
first chunk it does not hold, and the object is accepted only when its whole SHA-256
matches. Nothing reads a whole object into memory: files are read, hashed, sent and
written one chunk at a time.

Pure file and hash work; the transports are in :mod:`.node` and :mod:`.client`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.errors import IntegrityError, InvalidInput, NotFound

__all__ = ["CHUNK_SIZE", "StudyObject", "StudyManifest", "StudyFolder", "Chunk",
           "check_chunk", "download", "Download", "chunk_count"]

#: 1 MiB: a quarter of gRPC's default message limit; per-message costs (framing, the
#: event loop's hops) fall behind hashing and TLS (bench/consult_stream.py)
CHUNK_SIZE = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TYPES = {".dcm": "application/dicom", ".csv": "text/csv", ".json": "application/json",
          ".xml": "application/xml", ".png": "image/png", ".jpg": "image/jpeg",
          ".tif": "image/tiff", ".tiff": "image/tiff"}
STUDY_FILE = "study.json"


@dataclass(frozen=True, slots=True)
class StudyObject:
    name: str
    size: int
    sha256: str
    content_type: str
    chunk_size: int
    chunks: tuple[str, ...]      # SHA-256 of each chunk, hex

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256,
                "content_type": self.content_type, "chunk_size": self.chunk_size,
                "chunks": list(self.chunks)}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> StudyObject:
        return cls(str(d["name"]), int(d["size"]), str(d["sha256"]),  # type: ignore[call-overload]
                   str(d["content_type"]), int(d["chunk_size"]),  # type: ignore[call-overload]
                   tuple(d["chunks"]))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class StudyManifest:
    study_id: str
    kind: str                    # dicom | ecg | slide | file
    description: str
    objects: tuple[StudyObject, ...]

    def object(self, name: str) -> StudyObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise NotFound(f"study {self.study_id} has no object '{name}'; objects: "
                       f"{', '.join(o.name for o in self.objects)}")

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> dict[str, object]:
        return {"study_id": self.study_id, "kind": self.kind, "description": self.description,
                "objects": [o.to_json() for o in self.objects]}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> StudyManifest:
        return cls(str(d["study_id"]), str(d["kind"]), str(d.get("description", "")),
                   tuple(StudyObject.from_json(o) for o in d["objects"]))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    data: bytes | memoryview     # a view into ``wire`` when read off the wire
    sha256: str                  # hex of data as the sender hashed it; "" when it did not
    index: int
    wire: bytes | None = None    # the StudyChunk message this was read from, to relay as is


def chunk_count(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def check_chunk(obj: StudyObject, chunk: Chunk, where: str) -> None:
    """IntegrityError unless ``chunk`` is exactly chunk ``index`` of ``obj`` as recorded."""
    if chunk.offset != chunk.index * obj.chunk_size or chunk.index >= len(obj.chunks):
        raise IntegrityError(f"{where}: chunk {chunk.index} of {obj.name} arrived at offset "
                             f"{chunk.offset}, out of place")
    digest = hashlib.sha256(chunk.data).hexdigest()
    if digest != obj.chunks[chunk.index] or (chunk.sha256 and chunk.sha256 != digest):
        raise IntegrityError(f"{where}: chunk {chunk.index} of {obj.name} (offset "
                             f"{chunk.offset}) does not match its recorded SHA-256: it was "
                             "altered at the origin or on the way; fetch again from there")


def _name(value: str, what: str) -> str:
    if not _NAME.match(value or ""):
        raise InvalidInput(f"{what} must be letters, digits, '.', '_' or '-' (at most 128), "
                           f"got {value!r}")
    return value


class StudyFolder:
    """A node's studies: ``<root>/<study id>/{study.json, objects…}`` (read only)."""

    def __init__(self, root: Path, chunk_size: int = CHUNK_SIZE) -> None:
        self._root = Path(root)
        self._chunk = chunk_size

    def _dir(self, study_id: str) -> Path:
        folder = self._root / _name(study_id, "study id")
        if not (folder / STUDY_FILE).is_file():
            raise NotFound(f"this site keeps no study '{study_id}'")
        return folder

    def describe(self, study_id: str, patient_id: str) -> StudyManifest:
        """The study's manifest (hashing every object, a chunk at a time); NotFound
        unless it is ``patient_id``'s — the same answer as for no study at all."""
        folder = self._dir(study_id)
        try:
            meta = json.loads((folder / STUDY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise NotFound(f"study '{study_id}' has no readable {STUDY_FILE}") from None
        if str(meta.get("patient_id")) != patient_id:
            raise NotFound(f"this site keeps no study '{study_id}' of Patient/{patient_id}")
        objects = [self._object(folder / name) for name in sorted(os.listdir(folder))
                   if name != STUDY_FILE and _NAME.match(name) and (folder / name).is_file()]
        if not objects:
            raise NotFound(f"study '{study_id}' holds no objects")
        return StudyManifest(study_id, str(meta.get("kind", "file")),
                             str(meta.get("description", "")), tuple(objects))

    def _object(self, path: Path) -> StudyObject:
        whole, chunks, size = hashlib.sha256(), [], 0
        with path.open("rb") as f:
            while block := f.read(self._chunk):
                whole.update(block)
                chunks.append(hashlib.sha256(block).hexdigest())
                size += len(block)
        if not chunks:
            chunks.append(hashlib.sha256(b"").hexdigest())
        return StudyObject(path.name, size, whole.hexdigest(),
                           _TYPES.get(path.suffix.lower(), "application/octet-stream"),
                           self._chunk, tuple(chunks))

    def read(self, study_id: str, name: str, offset: int,
             chunk_size: int | None = None, *, digest: bool = True) -> Iterator[Chunk]:
        """The object's chunks from ``offset`` (a multiple of the chunk size), read lazily;
        each with its SHA-256 unless ``digest`` is false (the node serving a stream: the
        gateway and the client check every chunk against the manifest anyway, so a
        hash here would only be a fourth pass over the data)."""
        size = chunk_size or self._chunk
        path = self._dir(study_id) / _name(name, "object name")
        if not path.is_file():
            raise NotFound(f"study '{study_id}' has no object '{name}'")
        if offset % size:
            raise InvalidInput(f"offset {offset} is not a multiple of the chunk size {size}")
        with path.open("rb") as f:
            f.seek(offset)
            index = offset // size
            while block := f.read(size):
                yield Chunk(offset, block,
                            hashlib.sha256(block).hexdigest() if digest else "", index)
                offset += len(block)
                index += 1


# ---------------------------------------------------------------------------- reading side


@dataclass(frozen=True, slots=True)
class Download:
    path: Path
    size: int
    resumed_from: int            # bytes already held and verified before this call
    received: int                # bytes received in this call


async def download(obj: StudyObject, target: Path,
                   stream: Callable[[int], AsyncIterator[Chunk]], *,
                   where: str = "the study stream") -> Download:
    """Fetch ``obj`` into ``target``, resuming a partial ``<target>.part``.

    What is already held is checked chunk by chunk against the manifest and kept up to
    the last good chunk; the rest is asked for from there (``stream(offset)``), each
    chunk checked before it is written. The whole object's SHA-256 is checked at the end
    before ``target`` appears. A bad chunk raises :class:`IntegrityError` and leaves the
    good prefix in place for the next call."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    good, whole = _verified_prefix(obj, part)
    received = 0
    with part.open("r+b" if part.exists() else "w+b") as f:
        f.truncate(good)
        f.seek(good)
        expected = good // obj.chunk_size

        def take(chunk: Chunk) -> None:
            check_chunk(obj, chunk, where)
            f.write(chunk.data)
            f.flush()

        if good < obj.size:
            async for chunk in stream(good):
                if chunk.index != expected:
                    raise IntegrityError(f"{where}: expected chunk {expected} of {obj.name}, "
                                         f"got {chunk.index}")
                # two worker threads (hashing and writing release the GIL): the chunk's
                # check and write beside the whole object's running hash, while gRPC
                # takes in the next chunk; a bad chunk leaves the hash unused
                await asyncio.gather(asyncio.to_thread(take, chunk),
                                     asyncio.to_thread(whole.update, chunk.data))
                received += len(chunk.data)
                expected += 1
        if f.tell() != obj.size:
            raise IntegrityError(f"{where}: {obj.name} ended at {f.tell()} of {obj.size} bytes; "
                                 "fetch again to resume")
    if whole.hexdigest() != obj.sha256:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{obj.name}: the whole object's SHA-256 does not match the one "
                             "recorded at the origin; the partial copy was discarded")
    os.replace(part, target)
    return Download(target, obj.size, good, received)


def _verified_prefix(obj: StudyObject, part: Path) -> tuple[int, Any]:
    """How many bytes of ``part`` are whole chunks matching the manifest, in order, and
    the running SHA-256 over them."""
    whole = hashlib.sha256()
    if not part.exists():
        return 0, whole
    good = 0
    with part.open("rb") as f:
        for expected in obj.chunks:
            block = f.read(obj.chunk_size)
            if not block or hashlib.sha256(block).hexdigest() != expected:
                break
            if len(block) < obj.chunk_size and good + len(block) != obj.size:
                break
            good += len(block)
            whole.update(block)
    return good, whole
