"""A node serves a patient's record from its change feed while the source is unchanged
since the feed's last complete scan, and maps the source again the moment it changes."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from federation.errors import NotFound
from federation.nodes.adapters import open_adapter
from federation.nodes.feed import ChangeFeed
from federation.nodes.fhir_mapping import stable_id
from federation.nodes.service import NodeService
from federation.synth import ConsortiumManifest


def _node(consortium: ConsortiumManifest, tmp_path: Path) -> tuple[NodeService, Path]:
    """county-a (a vendor-A HIS database, no extra feeds) on a copy of its database."""
    spec = consortium.site("county-a")
    his = tmp_path / "his.sqlite"
    shutil.copy(spec.source_path, his)
    adapter = open_adapter(spec.source_kind, his, spec.mapping)
    return NodeService("county-a", spec.tier, adapter, spec.source_kind), his


def _scanned(service: NodeService, feed: ChangeFeed) -> None:
    """What the node's scan loop does: stamp, complete scan, then serve from the feed."""
    stamp = service.source_stamp()
    feed.apply_scan(service.scan(), service.quarantined_ids)
    service.serve_from(feed, stamp)


def _record(service: NodeService, patient_id: str, types: list[str] | None = None
            ) -> list[tuple[str, str, bytes]]:
    return [(e.resource_type, e.id, e.json) for e in service.fetch(patient_id, types or [])]


def _first_patient(his: Path) -> str:
    with closing(sqlite3.connect(his)) as db:
        return str(db.execute("SELECT PATIENT_ID FROM PAT_MASTER_INDEX ORDER BY PATIENT_ID "
                              "LIMIT 1").fetchone()[0])


def _add_lab_result(his: Path, local_patient: str, key: str) -> None:
    stamp = "2026-11-30 08:00:00"
    with closing(sqlite3.connect(his)) as db, db:
        db.execute("INSERT INTO LAB_MASTER VALUES (?,?,?,?,?,?,?,?,?)",
                   (key, local_patient, None, "BIO", "生化", "血液", stamp, stamp, "F"))
        db.execute("INSERT INTO LAB_RESULT VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (f"{key}-1", key, local_patient, None, 1, "K", "钾", "2823-3", "4.2", "N",
                    "mmol/L", "3.5", "5.3", None, None, stamp))


def test_an_unchanged_source_is_served_from_the_feed_exactly_as_mapped(
        consortium: ConsortiumManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service, his = _node(consortium, tmp_path)
    patient = stable_id("county-a", "Patient", _first_patient(his))
    mapped = _record(service, patient)                   # no feed yet: mapped from the source
    assert mapped[0][0] == "Patient" and len(mapped) > 3
    _scanned(service, ChangeFeed(tmp_path / "feed.sqlite"))

    def no_source(*_: object) -> None:
        raise AssertionError("the source was read although the feed holds the record")
    monkeypatch.setattr(service._adapter, "get_patient", no_source)
    served = _record(service, patient)
    assert served[0][:2] == mapped[0][:2]                # the Patient first
    assert sorted(served) == sorted(mapped)              # the same resources, byte for byte
    only = _record(service, patient, ["Observation", "Encounter"])
    assert only and {t for t, _, _ in only} <= {"Observation", "Encounter"}
    assert sorted(only) == sorted(r for r in mapped if r[0] in ("Observation", "Encounter"))


def test_a_changed_source_is_mapped_again_until_the_next_scan(
        consortium: ConsortiumManifest, tmp_path: Path) -> None:
    service, his = _node(consortium, tmp_path)
    local = _first_patient(his)
    patient = stable_id("county-a", "Patient", local)
    feed = ChangeFeed(tmp_path / "feed.sqlite")
    _scanned(service, feed)
    before = {rid for _, rid, _ in _record(service, patient)}
    _add_lab_result(his, local, "FEEDTEST1")
    new = stable_id("county-a", "Observation", "FEEDTEST1-1")
    # the feed has not seen the change: the record comes from the source, with it
    after = {rid for _, rid, _ in _record(service, patient)}
    assert new in after and new not in before
    assert not any(c.resource_id == new for c in feed.patient_resources(patient))
    _scanned(service, feed)
    assert any(c.resource_id == new for c in feed.patient_resources(patient))
    assert {rid for _, rid, _ in _record(service, patient)} == after


def test_an_unknown_patient_is_still_not_found(consortium: ConsortiumManifest,
                                               tmp_path: Path) -> None:
    service, _ = _node(consortium, tmp_path)
    _scanned(service, ChangeFeed(tmp_path / "feed.sqlite"))
    with pytest.raises(NotFound, match="county-a has no Patient/nobody"):
        list(service.fetch("nobody", []))


def test_a_feed_from_before_the_patient_index_is_indexed_by_the_next_scan(
        consortium: ConsortiumManifest, tmp_path: Path) -> None:
    service, his = _node(consortium, tmp_path)
    path = tmp_path / "feed.sqlite"
    feed = ChangeFeed(path)
    feed.apply_scan(service.scan(), service.quarantined_ids)
    head = feed.head()
    with closing(sqlite3.connect(path)) as db, db:       # as an older node wrote it
        db.execute("DROP INDEX feed_patient")
        db.execute("ALTER TABLE feed DROP COLUMN patient_id")
    reopened = ChangeFeed(path)
    patient = stable_id("county-a", "Patient", _first_patient(his))
    assert reopened.patient_resources(patient) == []     # not indexed yet
    result = reopened.apply_scan(service.scan(), service.quarantined_ids)
    assert (result.changed, result.deleted, reopened.head()) == (0, 0, head)  # no new versions
    held = reopened.patient_resources(patient)
    assert held[0].resource_type == "Patient" and held[0].resource_id == patient
    assert all(json.loads(c.body).get("subject", {}).get("reference") == f"Patient/{patient}"
               for c in held[1:] if c.resource_type != "AllergyIntolerance")
