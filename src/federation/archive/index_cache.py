"""The index of a person's replicated record, kept between reads while it is unchanged.

A paged read (``$everything``, a page at a time) needs the whole record's index — every
resource's site, type, id and dedup keys, deduplicated — to count it and to cut out one
page; a person may have thousands of resources, and a clinician pages through one
person's record, so the same index is wanted again and again. It is kept here, keyed by
the person's site records and the types asked for, with the deduplication done once.

Never stale: each read first asks the store for the record's **stamp** — the count, the
sum of feed sequence numbers and the latest arrival over the same rows, deleted ones
included (:meth:`~federation.archive.store.ArchiveStore.person_stamp`, one aggregate
over the person's index entries). Every change the feed stores moves it: a new version of
a resource has a higher sequence number and a later arrival, a tombstone too, a new
resource or one removed changes the count; a re-linked person has other site records and
so another key. A kept index is used only when its stamp is the store's now, so a read
through any gateway replica sees what the store holds.

Bounded: at most ``max_rows`` index rows in all (least recently used go first); 0 turns
the cache off (every read builds its index).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from federation.archive.dedup import deduplicate

__all__ = ["IndexCache", "PersonIndex", "Row"]

#: (site, resource type, resource id, dedup keys)
Row = tuple[str, str, str, frozenset[str] | None]
Key = tuple[tuple[tuple[str, str], ...], tuple[str, ...] | None]


@dataclass(frozen=True, slots=True)
class _Item:
    site_id: str
    resource_type: str
    keys: frozenset[str]


@dataclass(frozen=True, slots=True)
class PersonIndex:
    """A record's index rows (by site, then feed order) and their deduplication when
    every row is shown: the rows kept, and per kept row the other sites reporting it."""

    stamp: tuple[object, ...]
    rows: tuple[Row, ...]
    kept: tuple[int, ...]
    also: dict[int, list[str]]
    #: the (site, resource type) pairs present: what an access decision is asked about
    pairs: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, stamp: tuple[object, ...], rows: Sequence[Row]) -> PersonIndex:
        kept, also = deduplicate([_Item(site, rtype, keys or frozenset())
                                  for site, rtype, _, keys in rows])
        return cls(stamp, tuple(rows), tuple(kept), also,
                   frozenset((site, rtype) for site, rtype, _, _ in rows))


class IndexCache:
    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._entries: OrderedDict[Key, PersonIndex] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, refs: Sequence[tuple[str, str]], types: Sequence[str] | None,
            stamp: Callable[[], tuple[object, ...]],
            rows: Callable[[], Sequence[Row]]) -> PersonIndex:
        """The index of these site records' resources of ``types`` (None: all): kept
        when its stamp is still the store's, else built from ``rows()`` (and kept)."""
        if self.max_rows <= 0:
            return PersonIndex.of((), rows())
        key: Key = (tuple(refs), tuple(types) if types is not None else None)
        now = stamp()
        with self._lock:
            held = self._entries.get(key)
            if held is not None and held.stamp == now:
                self._entries.move_to_end(key)
                self.hits += 1
                return held
            self.misses += 1
        index = PersonIndex.of(now, rows())
        if len(index.rows) <= self.max_rows:
            self._keep(key, index)
        return index

    def _keep(self, key: Key, index: PersonIndex) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._rows -= len(old.rows)
            self._entries[key] = index
            self._rows += len(index.rows)
            while self._rows > self.max_rows:
                _, evicted = self._entries.popitem(last=False)
                self._rows -= len(evicted.rows)
