"""Blocking: which records are worth comparing at all.

Comparing every record with every other is quadratic, so records are compared only when
they share a *blocking key*. Several keys, each built from different fields, make sure
that no single missing or mistyped field hides a match; a key is never built from a blank
field (a record without a phone has no phone key — blank phones are not all one block).

=====  =====================================================================
kind   key
=====  =====================================================================
id     resident ID (only IDs that passed the GB 11643 cross-checks)
oi     other identifier (insurance card, social security number …)
od     the other identifier whole and with one character left out, for each position:
       two identifiers one typo apart (changed, dropped or swapped characters) share one
ph     phone
nt     name letters + phone (adds no pairs beyond ``ph``; the pairs that share both are
       nearly all one person, which is what weight estimation needs)
nb     name letters (order-free) + birth date
fb     family name letters + birth date (catches given-name typos, homophones)
gb     given name letters + birth date (catches changed or swapped surnames)
ny     name letters + birth year (catches birth-date typos)
np     name letters + postcode
dp     birth date + postcode
=====  =====================================================================

A key is hashed to a signed 64-bit integer (BLAKE2b, keyed in the gateway's store — see
:mod:`federation.security.privacy`), stable across processes, so the
online index stores and looks up integers; its low 4 bits are the kind's index in
:data:`KINDS`, so which kinds two records share can be read off their keys. Keys shared by very many records (a clinic's
switchboard number given as every patient's phone) carry no information; callers cap the
block size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from federation.identity.features import Features

__all__ = ["KINDS", "block_keys", "hashed_keys", "key_hash", "kind_mask"]

KINDS = ("id", "oi", "ph", "nt", "nb", "fb", "gb", "ny", "np", "dp", "od")


_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}


def key_hash(kind: str, key: str, secret: bytes | None = None) -> int:
    """The key as a signed 64-bit integer; with ``secret`` a keyed BLAKE2b (a MAC), so the
    gateway's stored keys cannot be reversed by hashing every possible phone or ID."""
    digest = hashlib.blake2b(f"{kind}:{key}".encode(), digest_size=8, key=secret or b"")
    h = int.from_bytes(digest.digest(), "big", signed=True)
    return (h & ~0xF) | _KIND_INDEX[kind]


def kind_mask(shared: Iterable[int]) -> int:
    """Bit *i* set when the keys include one of kind ``KINDS[i]``."""
    mask = 0
    for h in shared:
        mask |= 1 << (h & 0xF)
    return mask


def block_keys(f: Features) -> list[tuple[str, str]]:
    """(kind, key) pairs of a record, none built from a blank field."""
    keys: list[tuple[str, str]] = []
    if f.national_id:
        keys.append(("id", f.national_id))
    if f.other_id:
        keys.append(("oi", f.other_id))
        if len(f.other_id) >= 5:      # shorter ones would make every code a neighbour
            keys += [("od", f.other_id[:i] + f.other_id[i + 1:])
                     for i in range(len(f.other_id) + 1)]
    if f.phone:
        keys.append(("ph", f.phone))
        if f.name_key:
            keys.append(("nt", f"{f.name_key}|{f.phone}"))
    born = f.birth_date.isoformat() if f.birth_date else None
    if f.name_key and born:
        keys.append(("nb", f"{f.name_key}|{born}"))
    if born:
        for family, given in f.splits:
            if family:
                keys.append(("fb", f"{family}|{born}"))
            if given:
                keys.append(("gb", f"{given}|{born}"))
    if f.name_key and f.birth_date:
        keys.append(("ny", f"{f.name_key}|{f.birth_date.year}"))
    if f.name_key and f.postcode:
        keys.append(("np", f"{f.name_key}|{f.postcode}"))
    if born and f.postcode:
        keys.append(("dp", f"{born}|{f.postcode}"))
    return list(dict.fromkeys(keys))


def hashed_keys(f: Features, secret: bytes | None = None) -> list[int]:
    return [key_hash(kind, key, secret) for kind, key in block_keys(f)]
