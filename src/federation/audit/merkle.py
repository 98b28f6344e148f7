"""Merkle tree hashing and proofs of Certificate Transparency (RFC 6962 §2.1, RFC 9162 §2.1).

The audit log is a list of leaves ``D[0:n]``; its Merkle Tree Hash is

* ``MTH({}) = SHA-256()``, ``MTH({d0}) = SHA-256(0x00 ‖ d0)`` (leaf hash),
* ``MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))`` with ``k`` the largest power
  of two smaller than ``n`` (node hash).

Here:

* :class:`Frontier` — the *compact range* of a tree: the roots of its perfect subtrees
  from left to right (one per set bit of ``n``). Appending a leaf merges subtrees like a
  binary counter, so a log of any size is extended in O(1) amortised hashes and its root
  is a fold of at most 64 hashes — no leaf is ever re-read to append or sign.
* :func:`inclusion_proof` / :func:`verify_inclusion` — RFC 9162 §2.1.3.1 and §2.1.3.2.
* :func:`consistency_proof` / :func:`verify_consistency` — RFC 9162 §2.1.4.1 and §2.1.4.2.

Proof generation is written against :class:`SubtreeSource` — "the hash of the perfect
subtree of ``2**level`` leaves starting at ``start``" — so the store can answer from
stored tiles (:mod:`federation.audit.log`) and tests from a plain list
(:class:`ListSource`). Pure Python, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from federation.errors import IntegrityError, InvalidInput

__all__ = [
    "EMPTY_ROOT", "leaf_hash", "node_hash", "root_of", "Frontier", "SubtreeSource",
    "ListSource", "range_hash", "inclusion_proof", "consistency_proof", "verify_inclusion",
    "verify_consistency", "ProofError",
]

_sha = hashlib.sha256
EMPTY_ROOT = _sha(b"").digest()


class ProofError(IntegrityError):
    """A proof does not verify (or is malformed for the sizes given)."""

    default_code = "bad-proof"


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 ‖ leaf)`` (RFC 6962 §2.1)."""
    return _sha(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)`` (RFC 6962 §2.1)."""
    return _sha(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """The root over leaf hashes, level by level: an odd node at the end of a level is
    promoted unchanged, which yields exactly the RFC's tree shape."""
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


@dataclass(slots=True)
class Frontier:
    """The compact range ``[0, size)``: perfect-subtree roots, largest (leftmost) first.

    ``hashes[i]`` covers ``2**level`` leaves where the levels are the set bits of
    ``size`` from the highest down.
    """

    size: int = 0
    hashes: list[bytes] | None = None

    def __post_init__(self) -> None:
        if self.hashes is None:
            self.hashes = []
        if len(self.hashes) != self.size.bit_count():
            raise InvalidInput(f"a frontier of {self.size} leaves has {self.size.bit_count()} "
                               f"hashes, not {len(self.hashes)}")

    def append(self, lh: bytes, on_subtree: Callable[[int, int, bytes], None] | None = None
               ) -> None:
        """Add one leaf hash. ``on_subtree(level, index, hash)`` hears of every perfect
        subtree this completes (level ≥ 1; ``index`` counts subtrees of that level)."""
        hashes = self.hashes
        assert hashes is not None
        h, level, size = lh, 0, self.size
        while size & 1:
            h = node_hash(hashes.pop(), h)
            level += 1
            size >>= 1
            if on_subtree is not None:
                on_subtree(level, size, h)
        hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        hashes = self.hashes
        assert hashes is not None
        if not hashes:
            return EMPTY_ROOT
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = node_hash(h, r)
        return r

    def pack(self) -> bytes:
        return b"".join(self.hashes or [])

    @classmethod
    def unpack(cls, size: int, data: bytes) -> Frontier:
        if len(data) != 32 * size.bit_count():
            raise InvalidInput(f"stored frontier for {size} leaves has {len(data)} bytes")
        return cls(size, [data[i:i + 32] for i in range(0, len(data), 32)])


class SubtreeSource(Protocol):
    """Hashes of perfect subtrees: ``2**level`` leaves from ``index * 2**level``."""

    def subtree(self, level: int, index: int) -> bytes: ...


class ListSource:
    """A :class:`SubtreeSource` over leaf hashes in memory (tests, verification)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves = leaf_hashes

    def subtree(self, level: int, index: int) -> bytes:
        start = index << level
        return root_of(self._leaves[start:start + (1 << level)])


def range_hash(src: SubtreeSource, start: int, end: int) -> bytes:
    """``MTH(D[start:end])`` for a range whose left part is always aligned, as every range
    the RFC algorithms visit is: split at the largest power of two below its size."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return src.subtree(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(range_hash(src, start, start + k), range_hash(src, start + k, end))


def inclusion_proof(src: SubtreeSource, index: int, size: int) -> list[bytes]:
    """``PATH(m, D[0:n])`` (RFC 9162 §2.1.3.1): the audit path of leaf ``index``."""
    if not 0 <= index < size:
        raise InvalidInput(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(range_hash(src, start + k, end))
            end = start + k
        else:
            path.append(range_hash(src, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(src: SubtreeSource, old: int, new: int) -> list[bytes]:
    """``PROOF(m, D[0:n])`` (RFC 9162 §2.1.4.1): that the first ``old`` leaves of the
    ``new``-leaf tree are the whole ``old``-leaf tree."""
    if not 0 <= old <= new:
        raise InvalidInput(f"no consistency proof from {old} leaves to {new}")
    if old in (0, new):
        return []
    proof: list[bytes] = []
    start, end, whole = 0, new, True
    while old != end:  # the range [start, end) always starts inside the old tree
        k = _split(end - start)
        if old - start <= k:
            proof.append(range_hash(src, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(src, start, start + k))
            start, whole = start + k, False
    if not whole:
        proof.append(range_hash(src, start, end))
    proof.reverse()
    return proof


def verify_inclusion(lh: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> None:
    """RFC 9162 §2.1.3.2; raises :class:`ProofError` unless the proof leads to ``root``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, lh
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError(f"leaf {index} is not in the tree of {size} leaves with that root")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2; raises :class:`ProofError` unless the ``old``-leaf tree is a
    prefix of the ``new``-leaf tree."""
    if not 0 <= old <= new:
        raise ProofError(f"sizes {old} → {new} cannot be consistent")
    if old == new:
        if proof or old_root != new_root:
            raise ProofError(f"two different roots for the same size {old}: a fork")
        return
    if old == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than needed")
    if fr != old_root or sr != new_root:
        raise ProofError(f"the tree of {new} leaves does not extend the signed tree of {old} "
                         "leaves: history was rewritten (a fork)")
