"""Generate the six-site synthetic consortium and the ground truth of who is who.

``generate_consortium(out_dir)`` writes::

    out_dir/consortium.json          the sites (id, name, tier, parent, source, mapping)
    out_dir/truth.csv                site_id, local_patient_id, person_id — every source row
    out_dir/noise.json               noise rates, eligible/applied counts, planted hard cases
    out_dir/sites/<site_id>/         his.sqlite (vendor A/B) or patients.csv + visits.csv
    out_dir/sites/city-1/pacs/       studies.csv, the PACS study list (DICOM keywords)
    out_dir/sites/county-b/lis/      oru-YYYYMMDD.hl7, the LIS's HL7 v2 ORU^R01 batches

Vendor sites also hold clinical records consistent with their visits (labs, vitals,
orders, allergies, discharge summaries; see :mod:`federation.synth.clinical`); county-b's
laboratory results arrive through its LIS feed instead of its database. Each source has a
few planted bad rows for the quality report: a vital sign dated month 13 (county-b), a
study dated 31 February (city-1's PACS), and ``lis/oru-bad.hl7`` with a message cut in
its PID segment and a numeric result that is not a number.

Everything is drawn from ``random.Random`` streams derived from the seed (one stream per
purpose and site, so one site's draws do not shift another's) and nothing depends on the
clock: the same seed gives byte-identical files, and a rerun overwrites them in place.
``consortium.json`` is written last, so its presence means the directory is complete.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from federation.errors import ConfigError
from federation.nodes.adapters.normalise import split_name
from federation.nodes.model import LabReportRecord, LabResultRecord, PatientRecord
from federation.settings import SourceSettings
from federation.synth.clinical import (
    PatientContext,
    SiteClinical,
    make_site_clinical,
    person_allergy,
)
from federation.synth.hl7_feed import oru_r01, write_hl7_file, write_lis_feed
from federation.synth.noise import Appearance, NoiseLog, NoiseRates, apply_noise
from federation.synth.people import Person, Population, make_population
from federation.synth.writers import (
    CSV_LAYOUTS,
    SiteRow,
    SiteVisit,
    write_csv_export,
    write_pacs_studies,
    write_text_atomic,
    write_vendor_a,
    write_vendor_b,
)

__all__ = ["SITES", "ConsortiumManifest", "ExtraSource", "SiteSpec", "generate_consortium",
           "load_manifest"]

MANIFEST_FORMAT = 1
# (site id, name, tier, parent, writer: 'vendor_a' | 'vendor_b' | 'csv')
SITES = (
    ("city-1", "青岚市第一人民医院", "city", None, "vendor_a"),
    ("county-a", "东阳县人民医院", "county", "city-1", "vendor_a"),
    ("county-b", "西河县人民医院", "county", "city-1", "vendor_b"),
    ("township-a1", "东阳县石门镇卫生院", "township", "county-a", "csv"),
    ("township-a2", "东阳县白沙乡卫生院", "township", "county-a", "csv"),
    ("township-b1", "西河县柳林镇卫生院", "township", "county-b", "csv"),
)
_PARENT = {s[0]: s[3] for s in SITES}
#: sources beside a site's HIS: (kind, path under the site folder)
_EXTRA = {"city-1": (("pacs", "pacs/studies.csv"),), "county-b": (("hl7", "lis"),)}
_TIER = {s[0]: s[2] for s in SITES}
_ID_STYLE = {"city-1": ("", 10, 100000), "county-a": ("DY", 8, 10000),
             "county-b": ("", 0, 200001), "township-a1": ("SM", 5, 1),
             "township-a2": ("BS", 5, 1), "township-b1": ("LL", 5, 1)}
_VISIT_STYLE = {"vendor_a": ("V", 9, 1000), "vendor_b": ("", 0, 800001), "csv": ("JZ", 6, 1)}
_CHARGE_TYPES = ("城镇职工医保", "城乡居民医保", "城乡居民医保", "自费", "新农合")

WINDOW = (dt.date(2019, 1, 1), dt.date(2025, 12, 31))
# (text, ICD-10, category, min age, max age, sex or None)
_CHRONIC = (
    ("原发性高血压", "I10", "cardio", 35, 120, None),
    ("2型糖尿病", "E11.9", "endo", 30, 120, None),
    ("冠状动脉粥样硬化性心脏病", "I25.1", "cardio", 45, 120, None),
    ("慢性阻塞性肺疾病", "J44.9", "resp", 45, 120, None),
    ("慢性胃炎", "K29.5", "gastro", 18, 120, None),
    ("膝关节骨关节炎", "M17.9", "ortho", 45, 120, None),
    ("心房颤动", "I48.9", "cardio", 55, 120, None),
    ("支气管哮喘", "J45.9", "resp", 5, 120, None),
)
_ACUTE = (
    ("急性上呼吸道感染", "J06.9", "resp", 0, 120, None),
    ("肺炎", "J18.9", "resp", 0, 120, None),
    ("急性支气管炎", "J20.9", "resp", 0, 120, None),
    ("手足口病", "B08.4", "peds", 0, 6, None),
    ("腰椎间盘突出症", "M51.2", "ortho", 25, 120, None),
    ("桡骨远端骨折", "S52.5", "ortho", 5, 120, None),
    ("急性阑尾炎", "K35.8", "surgery", 8, 80, None),
    ("腹股沟疝", "K40.9", "surgery", 20, 120, "male"),
    ("胆囊结石伴慢性胆囊炎", "K80.1", "surgery", 30, 120, None),
    ("脑梗死", "I63.9", "neuro", 50, 120, None),
    ("左侧中央型肺鳞癌并纵膈淋巴结转移", "C34.9", "oncology", 45, 120, None),
    ("右肺上叶腺癌", "C34.1", "oncology", 40, 120, None),
    ("乳腺癌", "C50.9", "oncology", 30, 120, "female"),
    ("早孕", "Z32.1", "obgyn", 20, 45, "female"),
    ("单胎顺产", "O80", "obgyn", 20, 42, "female"),
    ("子宫平滑肌瘤", "D25.9", "obgyn", 30, 55, "female"),
    ("慢性心力衰竭", "I50.9", "cardio", 60, 120, None),
)
_EMERGENCY = (
    ("胸痛", "R07.4", "emergency", 18, 120, None),
    ("头皮裂伤", "S01.0", "emergency", 3, 120, None),
    ("急性酒精中毒", "F10.0", "emergency", 18, 90, None),
    ("一氧化碳中毒", "T58", "emergency", 0, 120, None),
    ("高热惊厥", "R56.0", "emergency", 0, 6, None),
    ("急性胃肠炎", "A09.9", "emergency", 0, 120, None),
)
_DEPARTMENTS = {
    "city": {"cardio": "心内科", "endo": "内分泌科", "resp": "呼吸内科", "gastro": "消化内科",
             "ortho": "骨科", "surgery": "普外科", "neuro": "神经内科", "oncology": "胸外科",
             "peds": "儿科", "obgyn": "妇产科", "emergency": "急诊科"},
    "county": {"cardio": "心内科", "endo": "内科", "resp": "呼吸内科", "gastro": "内科",
               "ortho": "骨科", "surgery": "外科", "neuro": "内科", "oncology": "肿瘤科",
               "peds": "儿科", "obgyn": "妇产科", "emergency": "急诊科"},
    "township": {"surgery": "外科", "ortho": "外科", "obgyn": "妇产科", "emergency": "全科"},
}
_KIND_WEIGHTS = {"city": (68, 22, 10), "county": (78, 14, 8), "township": (95, 2, 3)}
_KINDS = ("outpatient", "inpatient", "emergency")


@dataclass(frozen=True, slots=True)
class ExtraSource:
    """A source beside the site's HIS: ``hl7`` (a folder of v2 message files) or ``pacs``
    (a study-list CSV)."""

    kind: str
    path: Path                  # absolute


@dataclass(frozen=True, slots=True)
class SiteSpec:
    site_id: str
    name: str
    tier: str
    parent_site_id: str | None
    source_kind: str            # 'sql' | 'csv'
    source_path: Path           # absolute: his.sqlite, or the folder of the CSV export
    mapping: str | None         # packaged SQL mapping name ('vendor_a'), None for CSV
    extra_sources: tuple[ExtraSource, ...] = ()

    def source_settings(self) -> SourceSettings:
        """The node's ``[source]`` settings (with its extra feeds) for this site."""
        return SourceSettings(self.source_kind, self.source_path, self.mapping,
                              extra=tuple(SourceSettings(e.kind, e.path)
                                          for e in self.extra_sources))


@dataclass(frozen=True, slots=True)
class ConsortiumManifest:
    root: Path
    sites: tuple[SiteSpec, ...]
    truth_path: Path
    noise_path: Path
    seed: int
    people: int

    def site(self, site_id: str) -> SiteSpec:
        for spec in self.sites:
            if spec.site_id == site_id:
                return spec
        raise KeyError(site_id)


def generate_consortium(out_dir: Path, *, seed: int = 20261121,
                        people: int = 300) -> ConsortiumManifest:
    """Write the consortium under ``out_dir`` (created if needed) and return its manifest."""
    root = Path(out_dir).resolve()
    population = make_population(random.Random(f"{seed}:people"), people)
    presence = _assign_sites(random.Random(f"{seed}:sites"), population)
    rates, log = NoiseRates(), NoiseLog()
    truth: list[tuple[str, str, str]] = []
    site_entries = []
    for site_id, name, tier, parent, writer in SITES:
        members = [p for p in population.people if site_id in presence[p.person_id]]
        noise_rng = random.Random(f"{seed}:noise:{site_id}")
        seen = [apply_noise(noise_rng, p, site_id, tier, rates, log) for p in members]
        rows, visits = _site_records(seed, site_id, writer, seen,
                                     {p.person_id: p for p in members})
        truth += [(site_id, row.local_id, app.person_id) for row, app in rows]
        folder = root / "sites" / site_id
        clinical = None if writer == "csv" else _site_clinical(
            seed, site_id, writer, rows, visits, {p.person_id: p for p in members})
        rel = _write_site(folder, site_id, writer, [r for r, _ in rows], visits, seed,
                          clinical)
        site_entries.append({"id": site_id, "name": name, "tier": tier, "parent": parent,
                             "source_kind": "csv" if writer == "csv" else "sql",
                             "source_path": (Path("sites") / site_id / rel).as_posix(),
                             "mapping": None if writer == "csv" else writer,
                             "extra_sources": [
                                 {"kind": kind, "path": f"sites/{site_id}/{path}"}
                                 for kind, path in _EXTRA.get(site_id, ())]})
    _write_truth(root / "truth.csv", truth)
    _write_json(root / "noise.json", {
        "seed": seed, "people": len(population.people), "rates": rates.as_dict(),
        "eligible": dict(sorted(log.eligible.items())),
        "applied": dict(sorted(log.applied.items())),
        "hard_cases": population.hard_cases})
    _write_json(root / "consortium.json", {
        "format": MANIFEST_FORMAT, "seed": seed, "people": len(population.people),
        "truth": "truth.csv", "noise": "noise.json", "sites": site_entries})
    return load_manifest(root)


def load_manifest(out_dir: Path) -> ConsortiumManifest:
    """The manifest of a generated consortium; ConfigError when missing or malformed."""
    root = Path(out_dir).resolve()
    path = root / "consortium.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        sites = tuple(SiteSpec(
            site_id=s["id"], name=s["name"], tier=s["tier"], parent_site_id=s.get("parent"),
            source_kind=s["source_kind"], source_path=root / s["source_path"],
            mapping=s.get("mapping"),
            extra_sources=tuple(ExtraSource(kind=str(x["kind"]), path=root / x["path"])
                                for x in s.get("extra_sources", ()))) for s in data["sites"])
        return ConsortiumManifest(root=root, sites=sites, truth_path=root / data["truth"],
                                  noise_path=root / data["noise"], seed=int(data["seed"]),
                                  people=int(data["people"]))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; run `federation synth generate --out "
                          f"{root}` first") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a consortium manifest ({type(exc).__name__}: {exc})"
                          ) from None


def _assign_sites(rng: random.Random, population: Population) -> dict[str, list[str]]:
    """Where each person is known: mostly their own centre and its county hospital, some
    go up to the city; a few moved between two townships. Twins share their sites;
    namesakes are always known where they live."""
    presence: dict[str, list[str]] = {}
    forced = {pid for group in population.hard_cases["namesakes"] for pid in group}
    for p in population.people:
        sites = _draw_sites(rng, p.home)
        if p.person_id in forced and p.home not in sites:
            sites.append(p.home)
        presence[p.person_id] = sorted(sites, key=[s[0] for s in SITES].index)
    for first, second in population.hard_cases["twins"]:
        presence[second] = list(presence[first])
    return presence


def _draw_sites(rng: random.Random, home: str) -> list[str]:
    roll = [rng.random() for _ in range(4)]
    sites = []
    if home.startswith("township"):
        county = _PARENT[home]
        sibling = "township-a2" if home == "township-a1" else "township-a1"
        sites += [home] if roll[0] < 0.9 else []
        sites += [county] if roll[1] < 0.55 else []
        sites += ["city-1"] if roll[2] < 0.25 else []
        sites += [sibling] if county == "county-a" and roll[3] < 0.10 else []
        return sites or [home]
    if home.startswith("county"):
        township = "township-a1" if home == "county-a" else "township-b1"
        return [home] + (["city-1"] if roll[0] < 0.35 else []) + (
            [township] if roll[1] < 0.08 else [])
    return ["city-1"] + (["county-a" if roll[1] < 0.5 else "county-b"] if roll[0] < 0.1 else [])


def _local_ids(rng: random.Random, style: tuple[str, int, int], count: int) -> list[str]:
    prefix, width, start = style
    ids, n = [], start
    for _ in range(count):
        n += rng.choice((1, 1, 1, 2, 3, 7))          # gaps: merged or deleted records
        ids.append(f"{prefix}{n:0{width}d}" if width else str(n))
    return ids


def _site_records(seed: int, site_id: str, writer: str, seen: list[Appearance],
                  truth: dict[str, Person]
                  ) -> tuple[list[tuple[SiteRow, Appearance]], list[SiteVisit]]:
    """The site's rows (with the appearance each came from) and visits, with local ids."""
    rng = random.Random(f"{seed}:records:{site_id}")
    order = list(seen)
    rng.shuffle(order)                                 # local ids must not follow person order
    ids = _local_ids(rng, _ID_STYLE[site_id], len(order))
    rows, pending = [], []
    for local_id, app in zip(ids, order, strict=True):
        person = truth[app.person_id]
        chronic = _chronic(seed, person)
        visits = [_visit(rng, person, _TIER[site_id], chronic)
                  for _ in range(rng.choices(range(1, 7), (30, 25, 18, 12, 9, 6))[0])]
        last = max(v[1] for v in visits)
        rows.append((SiteRow(
            local_id=local_id, name=app.name, sex=app.sex, birth_date=app.birth_date,
            resident_id=app.resident_id, phone=app.phone, address=app.address,
            updated_at=last + dt.timedelta(minutes=rng.randint(5, 600)),
            charge_type=rng.choice(_CHARGE_TYPES)), app))
        pending += [(local_id, v) for v in visits]
    pending.sort(key=lambda item: (item[1][1], item[0]))
    visit_ids = _local_ids(rng, _VISIT_STYLE[writer], len(pending))
    visits = [SiteVisit(vid, pid, *v) for vid, (pid, v) in zip(visit_ids, pending, strict=True)]
    rows.sort(key=lambda r: r[0].local_id)
    return rows, visits


def _chronic(seed: int, person: Person) -> list[tuple]:
    """The person's chronic conditions, the same at every site they visit."""
    rng = random.Random(f"{seed}:chronic:{person.person_id}")
    age = WINDOW[1].year - person.birth_date.year
    eligible = [d for d in _CHRONIC if _fits(d, age, person.sex)]
    return rng.sample(eligible, min(len(eligible), rng.choice((0, 0, 1, 1, 2))))


def _fits(dx: tuple, age: int, sex: str) -> bool:
    return dx[3] <= age <= dx[4] and dx[5] in (None, sex)


def _visit(rng: random.Random, person: Person, tier: str, chronic: list[tuple]) -> tuple:
    """(kind, start, end, department, diagnosis text, local code) of one visit."""
    kind = rng.choices(_KINDS, _KIND_WEIGHTS[tier])[0]
    first = max(WINDOW[0], person.birth_date)
    day = first + dt.timedelta(days=rng.randrange((WINDOW[1] - first).days + 1))
    age = day.year - person.birth_date.year
    if kind == "emergency":
        dx = rng.choice([d for d in _EMERGENCY if _fits(d, age, person.sex)])
        start = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60)))
        end: dt.datetime | None = start + dt.timedelta(minutes=rng.randint(40, 480))
    else:
        options = [d for d in _ACUTE if _fits(d, age, person.sex)]
        dx = rng.choice(chronic) if chronic and rng.random() < 0.6 else rng.choice(options)
        start = dt.datetime.combine(day, dt.time(rng.randint(8, 16), rng.randrange(60)))
        end = None
        if kind == "inpatient":
            end = dt.datetime.combine(day + dt.timedelta(days=rng.randint(3, 14)),
                                      dt.time(rng.randint(9, 11), rng.randrange(60)))
            end = end if end.date() <= WINDOW[1] else None      # still in hospital
    return (kind, start, end, _department(rng, tier, dx[2], age), dx[0], _code(rng, tier, dx[1]))


def _department(rng: random.Random, tier: str, category: str, age: int) -> str:
    if tier == "township":
        return _DEPARTMENTS[tier].get(category) or rng.choice(("全科", "内科", "全科", "中医科"))
    if age < 14 and category not in ("surgery", "ortho", "emergency"):
        return "儿科"
    return _DEPARTMENTS[tier][category] if category != "peds" else "儿科"


def _code(rng: random.Random, tier: str, icd: str) -> str | None:
    """City: GB/T 14396 national-edition style (I10.x00, E11.900); county: ICD-10;
    townships: ICD-10, often left blank."""
    if tier == "city":
        return f"{icd}.x00" if "." not in icd else f"{icd}00"
    if tier == "township" and rng.random() < 0.3:
        return None
    return icd


def _site_clinical(seed: int, site_id: str, writer: str,
                   rows: list[tuple[SiteRow, Appearance]], visits: list[SiteVisit],
                   people: dict[str, Person]) -> SiteClinical:
    """Clinical records for a vendor site; chronic diagnoses and allergies come from the
    person (the same at every site), the rest from the site's own stream."""
    contexts = {}
    for row, app in rows:
        person = people[app.person_id]
        allergy = person_allergy(random.Random(f"{seed}:allergy:{person.person_id}"))
        contexts[row.local_id] = PatientContext(
            row, tuple(dx[0] for dx in _chronic(seed, person)), allergy)
    return make_site_clinical(random.Random(f"{seed}:clinical:{site_id}"),
                              [s[0] for s in SITES].index(site_id) + 1, visits, contexts,
                              numeric_ids=writer == "vendor_b", imaging=site_id in _PACS)


_PACS = frozenset(("city-1",))
_LIS = frozenset(("county-b",))


def _write_site(folder: Path, site_id: str, writer: str, rows: list[SiteRow],
                visits: list[SiteVisit], seed: int, clinical: SiteClinical | None) -> str:
    if writer == "vendor_a":
        write_vendor_a(folder / "his.sqlite", rows, visits, clinical)
    elif writer == "vendor_b":
        # this county's laboratory results reach the node through its LIS, not the HIS
        write_vendor_b(folder / "his.sqlite", rows, visits, clinical)
    else:
        write_csv_export(folder, CSV_LAYOUTS[site_id], rows, visits,
                         random.Random(f"{seed}:csv:{site_id}"))
        return "."
    if clinical is not None and site_id in _PACS:
        write_pacs_studies(folder / "pacs" / "studies.csv", rows, clinical)
    if clinical is not None and site_id in _LIS:
        _write_lis(folder / "lis", site_id, rows, clinical)
    return "his.sqlite"


def _write_lis(folder: Path, site_id: str, rows: list[SiteRow], clinical: SiteClinical) -> None:
    """The LIS feed, replacing an earlier run's batches, plus ``oru-bad.hl7``: one message
    cut in its PID segment and one whose numeric (NM) result is text."""
    if folder.is_dir():
        for old in folder.glob("oru-*.hl7"):
            old.unlink()
    patients = {r.local_id: _patient_record(r) for r in rows}
    orders = [(patients[rep.patient_local_id], rep, clinical.results[rep.local_id])
              for rep in clinical.reports]
    write_lis_feed(folder, orders, facility=site_id)
    if not orders:
        return
    patient, report, results = orders[len(orders) // 2]
    good = oru_r01(patient, report, results, sending_facility=site_id, control_id="LISBAD0001")
    pid = good.index("\rPID|") + 1
    truncated = good[:pid + (good.index("\r", pid) - pid) // 2]
    bad_id = str(len(clinical.reports) + 1)        # the next report number: no clash
    bad_report = LabReportRecord(
        local_id=bad_id, patient_local_id=report.patient_local_id,
        encounter_local_id=report.encounter_local_id, name=report.name,
        local_code=report.local_code, issued=report.issued, effective=report.effective,
        result_local_ids=(f"{bad_id}-1",))
    bad_result = LabResultRecord(
        local_id=f"{bad_id}-1", patient_local_id=report.patient_local_id,
        encounter_local_id=report.encounter_local_id, local_code="GLU", loinc_code="2345-7",
        name="葡萄糖", value="见备注", unit="mmol/L", effective=results[0].effective,
        report_local_id=bad_id)
    not_numeric = oru_r01(patient, bad_report, [bad_result], sending_facility=site_id,
                          control_id="LISBAD0002")
    write_hl7_file(folder / "oru-bad.hl7", [truncated, not_numeric])


def _patient_record(row: SiteRow) -> PatientRecord:
    family, given = split_name(row.name)
    return PatientRecord(local_id=row.local_id, name=" ".join(row.name.split()), family=family,
                         given=given, gender=row.sex,  # type: ignore[arg-type]
                         birth_date=row.birth_date, resident_id=row.resident_id,
                         phone=row.phone, address=row.address)


def _write_truth(path: Path, truth: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO(newline="")
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(("site_id", "local_patient_id", "person_id"))
    out.writerows(truth)
    write_text_atomic(path, buffer.getvalue())


def _write_json(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
