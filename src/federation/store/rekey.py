"""Re-encrypting the store under the active privacy key, while gateways keep running.

``federation keys rotate`` adds a key to the ring and makes it active, then calls
:func:`reencrypt`, which walks the two places that hold resident IDs and phones —

* ``identity_record.features`` (resident ID, phone, other identifier), and
* ``site_resource.body`` of Patient resources —

in primary-key order, a small batch per transaction. Rows are taken ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so a batch never waits for (or deadlocks with) a linker holding a
row; skipped rows are picked up by the next pass, and passes repeat until one finds
nothing left to change. Every value is decrypted with whatever key it names (old keys
stay in the ring) and sealed again with the active one.

A record whose blocking keys were computed before the store had a key ring (its digest
is not the keyed one) also gets its blocking keys rebuilt as keyed hashes, so turning
encryption on for an existing store is the same command.

:func:`key_usage` counts values per key id (``clear`` for unencrypted ones): an old key
may be retired once it counts nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, insert, select, tuple_, update
from sqlmodel import Session, col

from federation.archive.store import SEALED_TYPES, resource_aad
from federation.identity.index import PROTECTED, IdentityIndex
from federation.security.privacy import FieldCipher
from federation.store.models import IdentityBlock, IdentityRecord, SiteResource

__all__ = ["RekeyReport", "key_usage", "reencrypt"]

BATCH = 500
MAX_PASSES = 20


@dataclass(slots=True)
class RekeyReport:
    records: int = 0
    reindexed: int = 0
    patients: int = 0
    passes: int = 0
    remaining: dict[str, int] = field(default_factory=dict)


def _skip_locked(s: Session, query):  # type: ignore[no-untyped-def]
    if s.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def _records_pass(engine: Engine, index: IdentityIndex, report: RekeyReport) -> int:
    cipher = index.cipher
    assert cipher is not None
    changed, after = 0, ("", "")
    while True:
        with Session(engine) as s, s.begin():
            rows = s.execute(_skip_locked(s, select(IdentityRecord).where(
                tuple_(col(IdentityRecord.site_id), col(IdentityRecord.record_id)) > after)
                .order_by(col(IdentityRecord.site_id), col(IdentityRecord.record_id))
                .limit(BATCH))).scalars().all()
            if not rows:
                return changed
            for row in rows:
                data = json.loads(row.features)
                stale = any(data.get(n) and FieldCipher.key_id(data[n]) != cipher.active
                            for n in PROTECTED)
                f = index.load_features(row.site_id, row.record_id, row.features)
                digest = index.digest(f)
                if not stale and digest == row.digest:
                    continue
                values = {"features": index.dump_features(f)}
                if digest != row.digest:  # blocking keys from before the key ring: rebuild
                    values["digest"] = digest
                    s.execute(delete(IdentityBlock).where(
                        col(IdentityBlock.site_id) == row.site_id,
                        col(IdentityBlock.record_id) == row.record_id))
                    if row.state == "linked":
                        keys = list(dict.fromkeys(index.keys(f)))
                        if keys:
                            s.execute(insert(IdentityBlock), [
                                {"key": k, "site_id": row.site_id, "record_id": row.record_id}
                                for k in keys])
                    report.reindexed += 1
                s.execute(update(IdentityRecord).where(
                    col(IdentityRecord.site_id) == row.site_id,
                    col(IdentityRecord.record_id) == row.record_id).values(**values))
                changed += 1
            after = (rows[-1].site_id, rows[-1].record_id)


def _patients_pass(engine: Engine, cipher: FieldCipher) -> int:
    changed, after = 0, ("", "")
    while True:
        with Session(engine) as s, s.begin():
            rows = s.execute(_skip_locked(s, select(
                SiteResource.site_id, SiteResource.resource_type, SiteResource.resource_id,
                SiteResource.body).where(
                col(SiteResource.resource_type).in_(SEALED_TYPES),
                tuple_(col(SiteResource.site_id), col(SiteResource.resource_id)) > after)
                .order_by(col(SiteResource.site_id), col(SiteResource.resource_id))
                .limit(BATCH))).all()
            if not rows:
                return changed
            for site_id, rtype, rid, body in rows:
                if body is None or FieldCipher.key_id(bytes(body)) == cipher.active:
                    continue
                aad = resource_aad(site_id, rtype, rid)
                sealed = cipher.encrypt_bytes(cipher.decrypt_bytes(bytes(body), aad), aad)
                s.execute(update(SiteResource).where(
                    col(SiteResource.site_id) == site_id,
                    col(SiteResource.resource_type) == rtype,
                    col(SiteResource.resource_id) == rid).values(body=sealed))
                changed += 1
            after = (rows[-1][0], rows[-1][2])


def reencrypt(engine: Engine, cipher: FieldCipher) -> RekeyReport:
    """Seal every protected value with the active key; passes until nothing changes."""
    index = IdentityIndex(cipher=cipher)
    report = RekeyReport()
    while report.passes < MAX_PASSES:
        report.passes += 1
        records = _records_pass(engine, index, report)
        patients = _patients_pass(engine, cipher)
        report.records += records
        report.patients += patients
        if not records and not patients:
            break
    report.remaining = key_usage(engine)
    return report


def key_usage(engine: Engine) -> dict[str, int]:
    """How many protected values each key id seals (``clear``: not encrypted)."""
    counts: Counter[str] = Counter()
    with Session(engine) as s:
        for (features,) in s.execute(select(IdentityRecord.features)).yield_per(2000):
            data = json.loads(features)
            for name in PROTECTED:
                if data.get(name):
                    counts[FieldCipher.key_id(data[name]) or "clear"] += 1
        for (body,) in s.execute(select(SiteResource.body).where(
                col(SiteResource.resource_type).in_(SEALED_TYPES))).yield_per(2000):
            if body is not None:
                counts[FieldCipher.key_id(bytes(body)) or "clear"] += 1
    return dict(sorted(counts.items()))
