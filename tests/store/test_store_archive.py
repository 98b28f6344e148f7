"""The archive replica on SQLite and PostgreSQL: batches and cursor move together, a
replay changes nothing, an older version never overwrites a newer one, a new feed epoch
replaces the old one."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from federation.archive.store import ArchiveStore, StoredChange
from federation.errors import UnknownSite
from federation.store import GatewayStore

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def change(seq: int, rid: str = "p1", rtype: str = "Patient", *, body: bytes | None = None,
           deleted: bool = False, patient: str | None = None) -> StoredChange:
    return StoredChange(rtype, rid, seq, deleted, patient,
                        None if deleted else body or f'{{"v":{seq}}}'.encode())


@pytest.fixture
def archive(sites: GatewayStore, engine: Engine) -> ArchiveStore:
    return ArchiveStore(engine)


def test_a_batch_and_its_cursor_are_stored_together(archive: ArchiveStore) -> None:
    assert archive.apply("county-a", "e1", [change(1), change(2, "o1", "Observation", patient="p1")],
                  after=2, node_head=5, rejected=0, now=T0, caught_up=False) == 2
    cursor = archive.cursor("county-a")
    assert cursor is not None and (cursor.epoch, cursor.after, cursor.node_head) == ("e1", 2, 5)
    assert cursor.caught_up_at is None
    assert [r.resource_id for r in archive.resources_of("county-a", "p1")] == ["p1", "o1"]
    assert archive.counts() == {"county-a": {"Patient": 1, "Observation": 1}}


def test_replaying_a_batch_changes_nothing(archive: ArchiveStore) -> None:
    batch = [change(1), change(2, "o1", "Observation", patient="p1")]
    archive.apply("county-a", "e1", batch, after=2, node_head=2, rejected=0, now=T0,
                  caught_up=True)
    before = archive.resources_of("county-a", "p1")
    written = archive.apply("county-a", "e1", batch, after=2, node_head=2, rejected=0,
                            now=T0 + dt.timedelta(hours=1), caught_up=True)
    assert written == 0
    assert archive.resources_of("county-a", "p1") == before


def test_an_older_version_never_overwrites_a_newer_one(archive: ArchiveStore) -> None:
    archive.apply("county-a", "e1", [change(7, body=b'{"v":"new"}')], after=7, node_head=7,
                  rejected=0, now=T0, caught_up=True)
    # a second replica replaying an old cursor: the row and the cursor stay ahead
    archive.apply("county-a", "e1", [change(3, body=b'{"v":"old"}')], after=3, node_head=7,
                  rejected=0, now=T0, caught_up=False)
    stored = archive.get("county-a", "Patient", "p1")
    assert stored is not None and stored.body == b'{"v":"new"}' and stored.seq == 7
    assert archive.cursor("county-a").after == 7  # type: ignore[union-attr]


def test_a_tombstone_hides_the_resource(archive: ArchiveStore) -> None:
    archive.apply("county-a", "e1", [change(1)], after=1, node_head=1, rejected=0, now=T0,
                  caught_up=True)
    archive.apply("county-a", "e1", [change(2, deleted=True)], after=2, node_head=2,
                  rejected=0, now=T0, caught_up=True)
    assert archive.get("county-a", "Patient", "p1") is None
    assert archive.counts() == {}


def test_a_new_epoch_replaces_the_old_one(archive: ArchiveStore) -> None:
    archive.apply("county-a", "old", [change(40), change(41, "p2")], after=41, node_head=41,
                  rejected=2, now=T0, caught_up=True)
    # the node lost its feed: seq numbers start again, lower than what the archive holds
    archive.apply("county-a", "new", [change(1, body=b'{"v":"again"}')], after=1, node_head=1,
                  rejected=0, now=T0, caught_up=True)
    cursor = archive.cursor("county-a")
    assert cursor is not None and (cursor.epoch, cursor.after, cursor.rejected) == ("new", 1, 0)
    assert archive.get("county-a", "Patient", "p1").body == b'{"v":"again"}'  # type: ignore[union-attr]
    assert archive.drop_other_epochs("county-a", "new") == 1      # p2 was not in the new feed
    assert archive.get("county-a", "Patient", "p2") is None


def test_rejected_changes_are_counted_across_batches(archive: ArchiveStore) -> None:
    for after in (1, 2):
        archive.apply("county-a", "e1", [change(after)], after=after, node_head=2, rejected=3,
                      now=T0, caught_up=after == 2)
    cursor = archive.cursor("county-a")
    assert cursor is not None and cursor.rejected == 6 and cursor.caught_up_at == T0


def test_an_unknown_site_is_refused_and_nothing_is_stored(archive: ArchiveStore) -> None:
    with pytest.raises(UnknownSite, match="nowhere"):
        archive.apply("nowhere", "e1", [change(1)], after=1, node_head=1, rejected=0, now=T0,
                      caught_up=True)
    assert archive.cursors() == [] and archive.counts() == {}
