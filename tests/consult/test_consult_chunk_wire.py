"""Study chunks are encoded and decoded by hand (consult/wire.py): the bytes must be
exactly what protobuf reads and writes, and anything unexpected must not pass on as is."""

from __future__ import annotations

import hashlib

import pytest

from federation._proto.v1 import consult_pb2 as pb
from federation.consult.studies import Chunk
from federation.consult.wire import decode_chunk, encode_chunk
from federation.errors import IntegrityError

DATA = bytes(range(256)) * 700          # 179,200 bytes: a multi-byte length


def test_a_hand_encoded_chunk_is_what_protobuf_reads() -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    raw = encode_chunk(Chunk(3 * 2**40, DATA, sha, 3))
    msg = pb.StudyChunk.FromString(raw)
    assert (msg.offset, msg.data, msg.sha256, msg.index) == (3 * 2**40, DATA, sha, 3)
    # defaults are left out, as protobuf does: chunk 0 with no hash is the data field alone
    assert pb.StudyChunk.FromString(encode_chunk(Chunk(0, b"x", "", 0))).data == b"x"
    assert encode_chunk(Chunk(0, b"", "", 0)) == b""


def test_protobuf_bytes_decode_in_place_and_are_relayed_unchanged() -> None:
    raw = pb.StudyChunk(offset=2**20, data=DATA, sha256="ab", index=1).SerializeToString()
    c = decode_chunk(raw)
    assert (c.offset, bytes(c.data), c.sha256, c.index) == (2**20, DATA, "ab", 1)
    assert isinstance(c.data, memoryview) and c.data.obj is raw   # no copy
    assert c.wire is raw and encode_chunk(c) is raw


def test_unknown_or_repeated_fields_are_read_as_protobuf_does_and_not_passed_on() -> None:
    base = pb.StudyChunk(offset=5, data=b"first", index=2).SerializeToString()
    extra = bytes((0x2A, 3)) + b"odd"                     # field 5, length-delimited
    again = pb.StudyChunk(data=b"last").SerializeToString()   # data twice: the last wins
    raw = base + extra + again
    c = decode_chunk(raw)
    assert (c.offset, bytes(c.data), c.index) == (5, b"last", 2)
    assert c.wire is None                                  # re-encoded before relaying
    theirs, ours = pb.StudyChunk.FromString(raw), pb.StudyChunk.FromString(encode_chunk(c))
    assert (ours.offset, ours.data, ours.index) == (theirs.offset, theirs.data, theirs.index)
    assert b"odd" in raw and b"odd" not in encode_chunk(c)   # the odd field went no further


@pytest.mark.parametrize("raw", [
    bytes((0x12, 10)) + b"short",          # data runs past the end
    bytes((0x08,)) + b"\xff" * 11,         # a varint that never ends
    bytes((0x1A, 2)) + b"\xff\xfe",        # sha256 not UTF-8
    bytes((0x0B,)),                        # wire type 3 (groups): not in this message
])
def test_malformed_chunks_are_integrity_errors(raw: bytes) -> None:
    with pytest.raises(IntegrityError, match="malformed study chunk"):
        decode_chunk(raw, "site x")
