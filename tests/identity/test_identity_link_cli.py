"""`federation identity link`: the batch linker end to end, and its bad inputs."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from federation.cli import cli
from federation.synth.generator import SITES, _assign_sites
from federation.synth.noise import NoiseLog, NoiseRates, apply_noise
from federation.synth.people import make_population

HEADER = ["record_id", "site", "name", "sex", "birth_date", "national_id", "phone", "address"]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict]:
    """~4,800 noisy records of 3,000 people across six sites, with the truth."""
    pop = make_population(random.Random("cli-test"), 3000)
    presence = _assign_sites(random.Random("cli-sites"), pop)
    tiers = {s[0]: s[2] for s in SITES}
    rng, log = random.Random("cli-noise"), NoiseLog()
    path = tmp_path_factory.mktemp("link") / "records.csv"
    truth: dict[str, str] = {}
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for p in pop.people:
            for site in presence[p.person_id]:
                a = apply_noise(rng, p, site, tiers[site], NoiseRates(), log)
                rid = f"{site}-{len(truth)}"
                truth[rid] = p.person_id
                w.writerow([rid, site, a.name, a.sex, a.birth_date.isoformat(),
                            a.resident_id or "", a.phone or "", a.address])
    return path, truth, pop.hard_cases


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["identity", "link", *args])
    return result.exit_code, result.output


def _read(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {r["record_id"]: r["person_id"] for r in csv.DictReader(fh)}


def _pairs(labels: list) -> int:
    return sum(n * (n - 1) // 2 for n in Counter(labels).values())


def test_links_the_consortium_accurately_and_keeps_hard_cases_apart(
        consortium: tuple[Path, dict[str, str], dict], tmp_path: Path) -> None:
    path, truth, hard = consortium
    out, review = tmp_path / "out.csv", tmp_path / "review.csv"
    code, output = _run(str(path), "--out", str(out), "--review", str(review), "--workers", "2")
    assert code == 0, output
    got = _read(out)
    assert set(got) == set(truth)                       # every record has a person
    ids = list(truth)
    tp = _pairs([(got[r], truth[r]) for r in ids])
    precision, recall = tp / _pairs([got[r] for r in ids]), tp / _pairs([truth[r] for r in ids])
    assert precision >= 0.99 and recall >= 0.98, (precision, recall)
    person_records: dict[str, set[str]] = {}
    for rid, pid in truth.items():
        person_records.setdefault(pid, set()).add(got[rid])
    for kind in ("twins", "households"):
        for group in hard[kind]:
            persons = [person_records[p] for p in group if p in person_records]
            merged = set.intersection(*persons) if len(persons) > 1 else set()
            assert not merged, f"{kind} merged"
    assert "records →" in output and "persons" in output
    assert review.read_text(encoding="utf-8").startswith("record_a,record_b,weight,guards")


def test_bad_rows_are_kept_as_their_own_persons_and_named(tmp_path: Path) -> None:
    rows = [
        "record_id,name,sex,birth_date,phone",
        "a1,张伟,男,1970-01-02,13800000001",
        "a2,张伟,男,1970-01-02,13800000001",            # the same person as a1
        "a3,张伟,男,1970-01-02,13800000001,EXTRA",      # one field too many
        "a4,张伟,男",                                   # fields missing
        "a5,,,,",                                       # all blank
        "a6,张伟,男,1970-02-30,13800000001",            # impossible date
        ",张伟,男,1970-01-02,13800000001",              # no record id
    ]
    src = tmp_path / "in.csv"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    code, output = _run(str(src), "--out", str(out))
    assert code == 0, output
    got = _read(out)
    assert len(got) == 7 or set(got) >= {"a1", "a2", "a3", "a4", "a5", "a6"}
    assert got["a1"] == got["a2"]
    for rid in ("a3", "a4", "a5"):
        assert got[rid] not in {got[r] for r in got if r != rid}
    assert "line 4: 6 fields where the header has 5" in output
    assert "line 5: 3 fields where the header has 5" in output
    assert "line 8: no record_id" in output
    assert "birth-date-invalid 1" in output and "blank 1" in output


def test_non_utf8_input_is_refused_with_the_offset_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "gbk.csv"
    src.write_bytes("record_id,name\nr1,张伟\n".encode("gb18030"))
    out = tmp_path / "out.csv"
    code, output = _run(str(src), "--out", str(out))
    assert code == 2 and "not valid utf-8" in output and "offset 18" in output
    assert "--encoding gb18030" in output and not out.exists()
    code, output = _run(str(src), "--out", str(out), "--encoding", "gb18030")
    assert code == 0 and _read(out) == {"r1": "P0000001"}


def test_header_without_record_id_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("name,phone\n张伟,138\n", encoding="utf-8")
    code, output = _run(str(src), "--out", str(tmp_path / "o.csv"))
    assert code == 2 and "no record_id column" in output
