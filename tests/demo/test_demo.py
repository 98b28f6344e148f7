"""`federation demo --tour-only`: the real processes, end to end, twice (idempotent)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _run(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation", "demo", "--tour-only", "--people", "80",
         "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=240,
        env=dict(os.environ, COLUMNS="160", PYTHONUNBUFFERED="1"),
    )


@pytest.mark.slow
def test_demo_tour_reaches_all_six_sites_and_reruns(tmp_path):
    workdir = tmp_path / "demo"
    first = _run(workdir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Patients came back from all 6 sites" in first.stdout
    # the record tour: every source kind, a lab result from HL7 v2, the seed diagnosis
    assert "Records from every kind of source came back through the archive" in first.stdout
    assert "arrived as an HL7 v2 ORU^R01" in first.stdout
    assert "ICD-10 C34" in first.stdout and "鳞状细胞癌" in first.stdout
    assert "纵隔淋巴结" in first.stdout and "laterality Left" in first.stdout
    assert "oru-bad.hl7" in first.stdout and "studies.csv" in first.stdout  # quarantined
    # the referral tour: one upward and one downward referral, both loops closed
    assert "Both referrals closed their loops" in first.stdout
    assert "records a follow-up visit" in first.stdout
    # the consult tour: one ECG and one imaging consult, signed reports verified, closed
    assert "Both consults closed: signed reports are back" in first.stdout
    assert first.stdout.count("signature valid") == 2 and "books the slot" in first.stdout
    assert "every chunk SHA-256 checked" in first.stdout
    # the audit step: a CA-checked tree head, an inclusion proof, the whole log verified
    flat = " ".join(first.stdout.split())          # rich wraps long lines
    assert "signature checked against the consortium CA" in flat
    assert "leads to the signed root" in flat
    assert "nothing edited, deleted, reordered or forked" in flat
    for site in ("city-1", "county-a", "county-b", "township-a1", "township-a2", "township-b1"):
        assert site in first.stdout
    assert "all processes stopped" in first.stdout
    ca_before = (workdir / "pki" / "ca" / "ca.crt").read_bytes()
    data_before = (workdir / "data" / "truth.csv").read_bytes()

    second = _run(workdir)                                 # idempotent: reuses CA and data
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (workdir / "pki" / "ca" / "ca.crt").read_bytes() == ca_before
    assert (workdir / "data" / "truth.csv").read_bytes() == data_before

    # no process left behind, and no patient data in any log
    logs = "\n".join(p.read_text(errors="replace") for p in (workdir / "logs").glob("*.log"))
    assert "Traceback" not in logs
    ids, names = _patient_identifiers(workdir)
    assert ids and names
    leaked = [v for v in ids | names if v in logs]
    assert leaked == [], f"patient data in logs: {len(leaked)} values"
    # resident IDs are masked on screen too
    assert not any(i in first.stdout for i in ids)


def _patient_identifiers(workdir: Path) -> tuple[set[str], set[str]]:
    """Resident IDs and names straight from the sites' source files."""
    from federation.nodes.adapters import open_adapter
    from federation.synth import load_manifest

    manifest = load_manifest(workdir / "data")
    ids: set[str] = set()
    names: set[str] = set()
    with manifest.truth_path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for spec in manifest.sites:
        adapter = open_adapter(spec.source_kind, spec.source_path, spec.mapping)
        try:
            for row in rows:
                if row["site_id"] != spec.site_id:
                    continue
                rec = adapter.get_patient(row["local_patient_id"])
                if rec is None:
                    continue
                if rec.resident_id:
                    ids.add(rec.resident_id)
                if rec.name and len(rec.name) >= 2 and re.search(r"[\u4e00-\u9fff]", rec.name):
                    names.add(rec.name)
        finally:
            adapter.close()
    return ids, names


@pytest.mark.slow
def test_demo_stops_its_processes_on_sigterm(tmp_path):
    import signal
    import time

    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation", "demo", "--people", "40", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, COLUMNS="160", PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 120
    seen = ""
    while time.monotonic() < deadline and "Ctrl-C stops everything" not in seen:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "Ctrl-C stops everything" in seen, seen[-2000:]
    pids = _child_pids(proc.pid)
    assert len(pids) == 7                                  # gateway + six nodes
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "all processes stopped" in out
    time.sleep(0.5)
    assert [p for p in pids if Path(f"/proc/{p}").exists()] == []


def _child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children
