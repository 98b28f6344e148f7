"""Resident IDs and phones encrypted at rest; keyed blocking; rotation keeps all readable."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from federation.archive.store import ArchiveStore, StoredChange
from federation.errors import IntegrityError
from federation.fhir_systems import RESIDENT_ID_SYSTEM, local_patient_id_system
from federation.identity.http_api import mask
from federation.identity.index import RecordRef
from federation.identity.store import IdentityStore
from federation.security import privacy
from federation.security.privacy import FieldCipher, create_keyring, retire_key, rotate_keyring
from federation.store import GatewayStore
from federation.store.models import IdentityRecord
from federation.store.rekey import key_usage, reencrypt
from federation.synth.people import resident_id

WEI_ID = resident_id("532323", dt.date(1968, 4, 12), "male", 17)
PHONE = "13812345678"
WEI = {"name": "张伟", "sex": "male", "birth_date": "1968-04-12", "national_id": WEI_ID,
       "phone": PHONE, "address": "青岚市东阳县石门镇上坪村12号"}


def _patient(pid: str, site: str) -> StoredChange:
    body = {"resourceType": "Patient", "id": pid,
            "identifier": [{"system": local_patient_id_system(site), "value": pid.upper()},
                           {"system": RESIDENT_ID_SYSTEM, "value": WEI_ID}],
            "name": [{"use": "official", "text": "张伟"}], "gender": "male",
            "birthDate": "1968-04-12", "telecom": [{"system": "phone", "value": PHONE}]}
    return StoredChange("Patient", pid, 1, False, pid, json.dumps(body).encode())


def _raw_dump(engine: Engine) -> bytes:
    """Every stored value of every table, as bytes, the way a stolen backup reads."""
    out = []
    with engine.connect() as conn:
        for table in ("identity_record", "identity_block", "identity_event", "identity_review",
                      "site_resource", "exchange_log", "audit_leaf"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                for value in row:
                    out.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(out)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "privacy-keys.json"
    create_keyring(path)
    return path


def _stores(engine: Engine, keys: Path | None) -> tuple[IdentityStore, ArchiveStore]:
    empi = IdentityStore(engine, cipher=FieldCipher(keys) if keys else None)
    return empi, ArchiveStore(engine, empi.index)


def _fill(empi: IdentityStore, archive: ArchiveStore) -> str:
    empi.link("county-a", "pa", WEI, local_id="A1")
    archive.apply("city-1", "e1", [_patient("pc", "city-1")], after=1, node_head=1,
                  rejected=0, now=dt.datetime.now(dt.UTC), caught_up=True)
    person = empi.person_of(RecordRef("county-a", "pa"))
    assert person is not None and empi.person_of(RecordRef("city-1", "pc")) == person
    return person


def _readable(empi: IdentityStore, archive: ArchiveStore, person: str) -> None:
    assert empi.find_record(RESIDENT_ID_SYSTEM, WEI_ID) in {RecordRef("county-a", "pa"),
                                                          RecordRef("city-1", "pc")}
    assert {h["record_id"] for h in empi.search({"phone": PHONE})} == {"pa", "pc"}
    assert empi.person(person).golden["national_id"]["value"] == WEI_ID
    stored = archive.get("city-1", "Patient", "pc")
    assert stored is not None and WEI_ID.encode() in stored.body


def test_raw_rows_hold_no_resident_id_or_phone(sites: GatewayStore, engine: Engine,
                                                keys: Path) -> None:
    empi, archive = _stores(engine, keys)
    person = _fill(empi, archive)
    raw = _raw_dump(engine)
    for secret in (WEI_ID, PHONE, WEI_ID[-8:], PHONE[-8:]):
        assert secret.encode() not in raw
    _readable(empi, archive, person)
    # a clear store, for contrast, holds both
    assert set(key_usage(engine)) == {FieldCipher(keys).active}


def test_a_ciphertext_moved_to_another_row_or_altered_does_not_decrypt(
        sites: GatewayStore, engine: Engine, keys: Path) -> None:
    empi, archive = _stores(engine, keys)
    empi.link("county-a", "pa", WEI)
    empi.link("county-b", "pb", WEI | {"national_id": None, "phone": "13900000000"})
    with engine.begin() as conn:
        a = conn.execute(select(IdentityRecord.features).where(
            IdentityRecord.record_id == "pa")).scalar_one()
        b = json.loads(conn.execute(select(IdentityRecord.features).where(
            IdentityRecord.record_id == "pb")).scalar_one())
        b["phone"] = json.loads(a)["phone"]          # copy pa's sealed phone into pb
        conn.execute(text("UPDATE identity_record SET features = :f WHERE record_id = 'pb'"),
                     {"f": json.dumps(b)})
    with pytest.raises(IntegrityError, match="altered or moved"):
        empi.person(str(empi.person_of(RecordRef("county-b", "pb"))))


def test_rotation_reencrypts_everything_and_keeps_it_readable(sites: GatewayStore,
                                                              engine: Engine, keys: Path,
                                                              monkeypatch) -> None:
    empi, archive = _stores(engine, keys)
    replica = IdentityStore(engine, cipher=FieldCipher(keys))      # another gateway process
    person = _fill(empi, archive)
    old = FieldCipher(keys).active
    rotated = rotate_keyring(keys)
    assert rotated.active != old and old in rotated.keys
    # the replica has not re-read the ring yet: it still writes with the old key, and both
    # old and new values stay readable to everyone
    replica.link("county-b", "pb", WEI | {"phone": "13911112222"}, local_id="B1")
    report = reencrypt(engine, FieldCipher(keys))
    assert report.records >= 2 and report.patients == 1
    assert report.remaining == {rotated.active: key_usage(engine)[rotated.active]}
    retire_key(keys, old)
    fresh_empi, fresh_archive = _stores(engine, keys)
    _readable(fresh_empi, fresh_archive, person)
    # the replica follows the file: it reads values sealed with a key it never loaded
    monkeypatch.setattr(privacy, "RELOAD_SECONDS", 0.0)
    os.utime(keys, (time.time() + 5, time.time() + 5))
    _readable(replica, ArchiveStore(engine, replica.index), person)
    assert replica.index.cipher is not None and replica.index.cipher.active == rotated.active


def test_encrypting_an_existing_clear_store_rebuilds_keyed_blocking(sites: GatewayStore,
                                                                    engine: Engine,
                                                                    keys: Path) -> None:
    clear_empi, clear_archive = _stores(engine, None)
    person = _fill(clear_empi, clear_archive)
    assert WEI_ID.encode() in _raw_dump(engine)
    assert key_usage(engine) == {"clear": 5}        # ID and phone of two records, one body
    report = reencrypt(engine, FieldCipher(keys))
    assert report.reindexed == 2 and report.patients == 1
    assert "clear" not in report.remaining
    assert WEI_ID.encode() not in _raw_dump(engine)
    empi, archive = _stores(engine, keys)
    _readable(empi, archive, person)
    # new records still find the old ones through the rebuilt (keyed) blocking keys
    outcome = empi.link("county-b", "pb", WEI)
    assert outcome.person_id == person


def test_masking_shows_enough_to_recognise_and_not_enough_to_use() -> None:
    assert mask("140102199003071234") == "140***********1234"
    assert mask("13812345678") == "138****5678"
    assert mask("123") == "***"
