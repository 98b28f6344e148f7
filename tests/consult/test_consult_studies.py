"""Study material, without transports: manifests hash each chunk, reading is lazy and
chunk-aligned, and a download checks every chunk, resumes from the last good one after a
cut or a corrupted partial copy, and refuses a corrupted chunk."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.consult.studies import Chunk, StudyFolder, download
from federation.errors import IntegrityError, InvalidInput, NotFound
from federation.synth.studies import write_blob_study, write_dicom_study

CHUNK = 4096


@pytest.fixture
def folder(tmp_path: Path) -> StudyFolder:
    write_blob_study(tmp_path / "studies", "slide-1", "p-1", 10 * CHUNK + 123)
    write_dicom_study(tmp_path / "studies", "ct-1", "p-1", slices=2)
    return StudyFolder(tmp_path / "studies", chunk_size=CHUNK)


def test_the_manifest_hashes_every_chunk_and_the_whole(folder: StudyFolder,
                                                       tmp_path: Path) -> None:
    m = folder.describe("slide-1", "p-1")
    (obj,) = m.objects
    data = (tmp_path / "studies" / "slide-1" / "slide.tif").read_bytes()
    assert (obj.size, obj.sha256, len(obj.chunks)) == (len(data), hashlib.sha256(data).hexdigest(), 11)
    assert obj.chunks[-1] == hashlib.sha256(data[10 * CHUNK:]).hexdigest()
    ct = folder.describe("ct-1", "p-1")
    assert [o.content_type for o in ct.objects] == ["application/dicom"] * 2 and ct.kind == "dicom"


def test_a_study_is_only_its_patients_and_names_are_checked(folder: StudyFolder) -> None:
    with pytest.raises(NotFound, match="no study 'slide-1' of Patient/p-2"):
        folder.describe("slide-1", "p-2")
    with pytest.raises(NotFound):
        folder.describe("nothing", "p-1")
    with pytest.raises(InvalidInput, match="study id must be"):
        folder.describe("../etc", "p-1")
    with pytest.raises(InvalidInput, match="object name must be"):
        list(folder.read("slide-1", "../study.json", 0))
    with pytest.raises(InvalidInput, match="multiple of the chunk size"):
        list(folder.read("slide-1", "slide.tif", 100))


def _source(folder: StudyFolder, *, cut_after: int | None = None, corrupt: int | None = None):
    calls: list[int] = []

    async def stream(offset: int) -> AsyncIterator[Chunk]:
        calls.append(offset)
        for n, c in enumerate(folder.read("slide-1", "slide.tif", offset)):
            if cut_after is not None and len(calls) == 1 and n == cut_after:
                raise ConnectionError("cut")
            if corrupt is not None and c.index == corrupt:
                c = Chunk(c.offset, b"X" + c.data[1:], c.sha256, c.index)
            yield c
    return stream, calls


async def test_a_cut_stream_resumes_from_the_last_good_chunk(folder: StudyFolder,
                                                             tmp_path: Path) -> None:
    obj = folder.describe("slide-1", "p-1").objects[0]
    target = tmp_path / "out" / "slide.tif"
    stream, calls = _source(folder, cut_after=4)
    with pytest.raises(ConnectionError):
        await download(obj, target, stream)
    assert not target.exists()
    got = await download(obj, target, stream)
    assert calls == [0, 4 * CHUNK] and got.resumed_from == 4 * CHUNK
    assert got.received == obj.size - 4 * CHUNK
    assert hashlib.sha256(target.read_bytes()).hexdigest() == obj.sha256


async def test_a_corrupted_chunk_is_detected_and_the_good_prefix_kept(
        folder: StudyFolder, tmp_path: Path) -> None:
    obj = folder.describe("slide-1", "p-1").objects[0]
    target = tmp_path / "out" / "slide.tif"
    bad, _ = _source(folder, corrupt=6)
    with pytest.raises(IntegrityError, match="chunk 6 of slide.tif .* does not match"):
        await download(obj, target, bad)
    part = target.with_name("slide.tif.part")
    assert part.stat().st_size == 6 * CHUNK
    # a partial copy damaged on disk is re-checked: the download resumes before the damage
    with part.open("r+b") as f:
        f.seek(2 * CHUNK + 5)
        f.write(b"!")
    good, calls = _source(folder)
    got = await download(obj, target, good)
    assert calls == [2 * CHUNK] and got.resumed_from == 2 * CHUNK
    assert hashlib.sha256(target.read_bytes()).hexdigest() == obj.sha256
