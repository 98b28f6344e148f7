"""The Merkle core against a naive transcription of RFC 9162 §2.1, on random trees."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from federation.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    ListSource,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# ------------------------------------------------------- naive reference (the RFC as written)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    return subproof(m, d, True) if 0 < m < len(d) else []


# -------------------------------------------------------------------------- strategies

leaves = st.lists(st.binary(min_size=0, max_size=8), min_size=1, max_size=70)


def _src(d: list[bytes]) -> ListSource:
    return ListSource([leaf_hash(x) for x in d])


@given(leaves)
def test_root_and_frontier_match_the_rfc(d: list[bytes]) -> None:
    f = Frontier()
    for x in d:
        f.append(leaf_hash(x))
    assert root_of([leaf_hash(x) for x in d]) == f.root() == mth(d)
    again = Frontier.unpack(f.size, f.pack())
    assert again.root() == f.root()


def test_empty_tree() -> None:
    assert Frontier().root() == EMPTY_ROOT == mth([])


@given(leaves, st.data())
def test_inclusion_proofs_match_the_rfc_and_verify(d: list[bytes], data: st.DataObject) -> None:
    m = data.draw(st.integers(0, len(d) - 1))
    p = inclusion_proof(_src(d), m, len(d))
    assert p == path(m, d)
    verify_inclusion(leaf_hash(d[m]), m, len(d), p, mth(d))


@given(leaves, st.data())
def test_consistency_proofs_match_the_rfc_and_verify(d: list[bytes], data: st.DataObject) -> None:
    m = data.draw(st.integers(0, len(d)))
    p = consistency_proof(_src(d), m, len(d))
    assert p == proof(m, d)
    verify_consistency(m, len(d), mth(d[:m]), mth(d), p)


@given(leaves, st.data())
@settings(max_examples=200)
def test_altered_inclusion_proofs_fail(d: list[bytes], data: st.DataObject) -> None:
    m = data.draw(st.integers(0, len(d) - 1))
    p = inclusion_proof(_src(d), m, len(d))
    root = mth(d)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(d[m] + b"x"), m, len(d), p, root)
    if p:
        i = data.draw(st.integers(0, len(p) - 1))
        bad = list(p)
        bad[i] = hashlib.sha256(bad[i]).digest()
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(d[m]), m, len(d), bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(d[m]), m, len(d), p[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(d[m]), m, len(d), [*p, root], root)
    other = data.draw(st.integers(0, len(d) - 1))
    assume(other != m and d[other] != d[m])
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(d[m]), other, len(d), p, root)


@given(leaves, st.data())
@settings(max_examples=200)
def test_forked_histories_fail_consistency(d: list[bytes], data: st.DataObject) -> None:
    """A tree whose first ``m`` leaves were rewritten cannot prove it extends the old one."""
    m = data.draw(st.integers(1, len(d)))
    n = data.draw(st.integers(m, len(d)))
    i = data.draw(st.integers(0, m - 1))
    forked = list(d[:n])
    forked[i] = forked[i] + b"!"
    p = consistency_proof(_src(forked), m, n)
    with pytest.raises(ProofError):
        verify_consistency(m, n, mth(d[:m]), mth(forked), p)
    good = consistency_proof(_src(d), m, n)
    if good:
        j = data.draw(st.integers(0, len(good) - 1))
        bad = list(good)
        bad[j] = node_hash(bad[j], bad[j])
        with pytest.raises(ProofError):
            verify_consistency(m, n, mth(d[:m]), mth(d[:n]), bad)


def test_frontier_reports_completed_subtrees() -> None:
    seen: list[tuple[int, int]] = []
    f = Frontier()
    for i in range(8):
        f.append(leaf_hash(bytes([i])), lambda level, index, _h: seen.append((level, index)))
    assert seen == [(1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)]
