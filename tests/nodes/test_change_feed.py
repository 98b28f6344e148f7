"""The node's change feed: versions by a monotonic cursor, tombstones only after a
complete scan, and a feed file that survives a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.envelope import Envelope
from federation.nodes.feed import ChangeFeed, ScanInterrupted


def env(rid: str, version: int = 1, rtype: str = "Patient") -> Envelope:
    body = json.dumps({"resourceType": rtype, "id": rid, "v": version}).encode()
    return Envelope(rtype, rid, "county-a", body)


def test_first_scan_records_everything_and_a_rescan_nothing(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path / "feed.sqlite")
    first = feed.apply_scan([env("a"), env("b"), env("c", rtype="Encounter")])
    assert (first.scanned, first.changed, first.deleted, first.head) == (3, 3, 0, 3)
    again = feed.apply_scan([env("a"), env("b"), env("c", rtype="Encounter")])
    assert (again.changed, again.deleted, again.head) == (0, 0, 3)
    assert [c.seq for c in feed.changes(0)] == [1, 2, 3]
    assert feed.count() == {"Encounter": 1, "Patient": 2}


def test_a_changed_resource_moves_to_a_new_sequence_number(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path / "feed.sqlite")
    feed.apply_scan([env("a"), env("b")])
    result = feed.apply_scan([env("a"), env("b", version=2)])
    assert (result.changed, result.head) == (1, 3)
    [latest] = feed.changes(2)
    assert (latest.seq, latest.resource_id, json.loads(latest.body)["v"]) == (3, "b", 2)
    # the old version is gone: replaying from zero gives each resource once, newest
    assert [(c.resource_id, c.seq) for c in feed.changes(0)] == [("a", 1), ("b", 3)]


def test_a_vanished_resource_becomes_a_tombstone(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path / "feed.sqlite")
    feed.apply_scan([env("a"), env("b")])
    result = feed.apply_scan([env("a")])
    assert (result.deleted, result.head) == (1, 3)
    [tomb] = feed.changes(2)
    assert tomb.deleted and tomb.resource_id == "b" and tomb.body == b""
    back = feed.apply_scan([env("a"), env("b")])              # re-created: live again
    assert back.changed == 1 and not feed.changes(3)[0].deleted


def test_records_that_failed_to_map_are_kept_not_deleted(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path / "feed.sqlite")
    feed.apply_scan([env("a"), env("b")])
    result = feed.apply_scan([env("a")], keep=lambda: [("Patient", "b")])
    assert result.deleted == 0 and feed.head() == 2


def test_an_interrupted_scan_writes_no_tombstones(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path / "feed.sqlite")
    feed.apply_scan([env("a"), env("b"), env("c")])

    def broken() -> Iterator[Envelope]:
        yield env("a", version=2)
        raise ScanInterrupted()

    with pytest.raises(ScanInterrupted):
        feed.apply_scan(broken())
    # nothing deleted; the version read before the failure may stand (it is true)
    assert {c.resource_id for c in feed.changes(0) if not c.deleted} == {"a", "b", "c"}


def test_the_feed_survives_a_restart_with_its_epoch_and_cursor(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    feed = ChangeFeed(path)
    feed.apply_scan([env("a"), env("b")])
    epoch = feed.epoch
    reopened = ChangeFeed(path)
    assert (reopened.epoch, reopened.head()) == (epoch, 2)
    assert reopened.apply_scan([env("a"), env("b")]).changed == 0     # resumes, not restarts
    assert ChangeFeed(tmp_path / "other.sqlite").epoch != epoch


def test_pages_respect_the_count_and_byte_limits(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path / "feed.sqlite")
    feed.apply_scan([env(f"p{i:03d}") for i in range(50)])
    assert [c.seq for c in feed.changes(10, limit=5)] == [11, 12, 13, 14, 15]
    size = len(feed.changes(0, limit=1)[0].body)
    assert len(feed.changes(0, limit=50, max_bytes=size * 3)) == 3
    assert len(feed.changes(0, limit=50, max_bytes=1)) == 1       # never an empty page
    assert feed.changes(50) == []
