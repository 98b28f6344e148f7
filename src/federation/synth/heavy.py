"""Persons with a long record at several sites: the regional archive's benchmark data.

``heavy_records(out_dir, persons=4, resources_per_site=500)`` writes, for each of
``sites`` (four by default), a vendor-A HIS database (``sites/<id>/his.sqlite``) in which
the same ``persons`` people — identical demographics everywhere, so the EMPI links them
with certainty — each have visits enough for about ``resources_per_site`` FHIR resources
(Patient, Encounters, visit Conditions, lab reports and results, vital signs, orders,
allergies, discharge summaries), drawn by the same generators as the demo consortium
(:mod:`federation.synth.clinical`). Deterministic for a seed. Returns the manifest
(``consortium.json`` as :func:`~federation.synth.generator.generate_consortium` writes it),
so nodes start from it the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

from federation.synth.clinical import PatientContext, SiteClinical, make_site_clinical
from federation.synth.generator import (
    SITES,
    ConsortiumManifest,
    _chronic,
    _visit,
    load_manifest,
)
from federation.synth.people import make_population
from federation.synth.writers import SiteRow, SiteVisit, write_text_atomic, write_vendor_a

__all__ = ["BENCH_SITES", "count_resources", "heavy_records"]

BENCH_SITES = ("city-1", "county-a", "county-b", "township-a1")


def count_resources(visits: list[SiteVisit], clinical: SiteClinical, patients: int) -> int:
    """How many FHIR resources a node maps these records to (Patient, Encounter, visit
    Condition and the clinical records)."""
    return (patients + len(visits) + sum(1 for v in visits if v.diagnosis_text)
            + len(clinical.reports) + sum(len(r) for r in clinical.results.values())
            + len(clinical.vitals) + len(clinical.medications) + len(clinical.allergies)
            + len(clinical.documents) + len(clinical.studies))


def heavy_records(out_dir: Path, *, persons: int = 4, resources_per_site: int = 500,
                  seed: int = 20261130, sites: tuple[str, ...] = BENCH_SITES
                  ) -> ConsortiumManifest:
    root = Path(out_dir).resolve()
    people = make_population(random.Random(f"{seed}:people"), persons).people[:persons]
    tiers = {s[0]: (s[1], s[2], s[3]) for s in SITES}
    entries = []
    for number, site_id in enumerate(sites, start=1):
        name, tier, parent = tiers[site_id]
        rng = random.Random(f"{seed}:heavy:{site_id}")
        rows, contexts, visits = [], {}, []
        stamp = dt.datetime(2025, 12, 31, 12, 0)
        for i, person in enumerate(people):
            local = f"H{number}{i:05d}"
            row = SiteRow(local_id=local, name=person.name, sex=person.sex,
                          birth_date=person.birth_date, resident_id=person.resident_id,
                          phone=person.phone, address=person.address, updated_at=stamp,
                          charge_type="城乡居民医保")
            rows.append(row)
            chronic = _chronic(seed, person)
            contexts[local] = PatientContext(row, tuple(dx[0] for dx in chronic), None)
            mine: list[SiteVisit] = []
            while True:
                kind, start, end, dept, text, code = _visit(rng, person, "city", chronic)
                mine.append(SiteVisit(f"V{number}{i:03d}{len(mine):05d}", local, kind, start,
                                      end, dept, text, code))
                probe = make_site_clinical(random.Random(f"{seed}:{site_id}:{local}"), number,
                                           mine, {local: contexts[local]}, numeric_ids=False,
                                           imaging=False)
                if count_resources(mine, probe, 1) >= resources_per_site:
                    break
            visits += mine
        visits.sort(key=lambda v: (v.start, v.local_id))
        clinical = make_site_clinical(random.Random(f"{seed}:{site_id}"), number, visits,
                                      contexts, numeric_ids=False, imaging=False)
        write_vendor_a(root / "sites" / site_id / "his.sqlite", rows, visits, clinical)
        entries.append({"id": site_id, "name": name, "tier": tier, "parent": parent,
                        "source_kind": "sql", "source_path": f"sites/{site_id}/his.sqlite",
                        "mapping": "vendor_a", "extra_sources": []})
    write_text_atomic(root / "truth.csv", "site_id,local_patient_id,person_id\n" + "".join(
        f"{site},H{n}{i:05d},{p.person_id}\n" for n, site in enumerate(sites, start=1)
        for i, p in enumerate(people)))
    write_text_atomic(root / "noise.json", "{}\n")
    write_text_atomic(root / "consortium.json", json.dumps({
        "format": 1, "seed": seed, "people": persons, "truth": "truth.csv",
        "noise": "noise.json", "sites": entries}, ensure_ascii=False, indent=2) + "\n")
    return load_manifest(root)
