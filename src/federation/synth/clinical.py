"""Clinical records for one synthetic site, consistent with its visits and diagnoses.

Per visit: laboratory panels (a report per panel, values shifted by the diagnosis —
diabetes raises glucose and HbA1c, infections the white count and CRP), vital signs
(hypertensive people run high), medication orders that treat the visit's diagnosis and
the person's chronic conditions, a discharge summary for each finished inpatient stay,
and — where the site has a PACS — imaging studies that fit the diagnosis. Allergies
belong to the person (drawn once from the seed, the same wherever they are known).

Records are :mod:`federation.nodes.model` records with the site's local ids; the writers
store them the way each vendor does. Everything comes from the ``random.Random`` passed
in, visited in a fixed order, so the same seed gives the same records.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from federation.nodes.model import (
    AllergyRecord,
    DocumentRecord,
    ImagingStudyRecord,
    LabReportRecord,
    LabResultRecord,
    MedicationRecord,
    VitalSignRecord,
)
from federation.synth.writers import SiteRow, SiteVisit

__all__ = ["DICOM_UID_ROOT", "PatientContext", "SiteClinical", "make_site_clinical",
           "person_allergy"]

#: the synthetic PACS's UID root; study UIDs are <root>.<site number>.<study number>
DICOM_UID_ROOT = "1.2.826.0.1.3680043.10.543"

# (local code, LOINC or None, name, unit, low, high, decimals, mean, sd)
_ITEMS: dict[str, tuple] = {
    "WBC": ("WBC", "6690-2", "白细胞计数", "10^9/L", "3.5", "9.5", 2, 6.5, 1.5),
    "HGB": ("HGB", "718-7", "血红蛋白", "g/L", "115", "175", 0, 138, 12),
    "PLT": ("PLT", "777-3", "血小板计数", "10^9/L", "125", "350", 0, 230, 50),
    "NEUT%": ("NEUT%", None, "中性粒细胞百分比", "%", "40", "75", 1, 60, 8),
    "GLU": ("GLU", "2345-7", "葡萄糖", "mmol/L", "3.9", "6.1", 2, 5.1, 0.5),
    "CREA": ("CREA", "2160-0", "肌酐", "μmol/L", "57", "111", 0, 78, 14),
    "ALT": ("ALT", "1742-6", "丙氨酸氨基转移酶", "U/L", "9", "50", 0, 24, 9),
    "TC": ("TC", "2093-3", "总胆固醇", "mmol/L", None, "5.2", 2, 4.7, 0.8),
    "K": ("K", "2823-3", "钾", "mmol/L", "3.5", "5.3", 2, 4.2, 0.3),
    "HbA1c": ("HbA1c", "4548-4", "糖化血红蛋白", "%", "4.0", "6.0", 1, 5.4, 0.3),
    "CRP": ("CRP", None, "C反应蛋白", "mg/L", None, "10", 1, 4, 2.5),
    "cTnI": ("cTnI", "10839-9", "肌钙蛋白I", "ng/mL", None, "0.04", 3, 0.02, 0.01),
    "NT-proBNP": ("NT-proBNP", "33762-6", "N端脑钠肽前体", "pg/mL", None, "125", 0, 70, 30),
}
# text items: (local code, LOINC, name)
_TEXT_ITEMS = {"PRO": ("PRO", "2888-6", "尿蛋白"), "U-GLU": ("U-GLU", "2350-7", "尿糖"),
               "BLD": ("BLD", "5794-3", "尿隐血")}
# panel code → (report name, items)
_PANELS = {
    "CBC": ("血常规", ("WBC", "HGB", "PLT", "NEUT%")),
    "BIO": ("生化全套", ("GLU", "CREA", "ALT", "TC", "K")),
    "A1C": ("糖化血红蛋白", ("HbA1c",)),
    "CRP": ("C反应蛋白", ("CRP",)),
    "UA": ("尿常规", ("PRO", "U-GLU", "BLD")),
    "CARD": ("心肌标志物", ("cTnI", "NT-proBNP")),
}
_INFECTION = frozenset(("急性上呼吸道感染", "肺炎", "急性支气管炎", "急性阑尾炎", "手足口病",
                        "急性胃肠炎", "胆囊结石伴慢性胆囊炎"))
_DIABETES, _HYPERTENSION = "2型糖尿病", "原发性高血压"
_CARDIAC = frozenset(("冠状动脉粥样硬化性心脏病", "慢性心力衰竭", "胸痛", "心房颤动"))

# drug: (name, local code, dose, unit, route, frequency)
_DRUGS = {
    "氨氯地平": ("氨氯地平片", "YP0101", "5", "mg", "口服", "qd"),
    "缬沙坦": ("缬沙坦胶囊", "YP0102", "80", "mg", "口服", "qd"),
    "二甲双胍": ("二甲双胍片", "YP0201", "0.5", "g", "口服", "tid"),
    "阿卡波糖": ("阿卡波糖片", "YP0202", "50", "mg", "口服", "tid"),
    "阿司匹林": ("阿司匹林肠溶片", "YP0301", "100", "mg", "口服", "qd"),
    "阿托伐他汀": ("阿托伐他汀钙片", "YP0302", "20", "mg", "口服", "qn"),
    "噻托溴铵": ("噻托溴铵粉吸入剂", "YP0401", "18", "ug", "吸入", "qd"),
    "奥美拉唑": ("奥美拉唑肠溶胶囊", "YP0501", "20", "mg", "口服", "bid"),
    "塞来昔布": ("塞来昔布胶囊", "YP0601", "200", "mg", "口服", "qd"),
    "华法林": ("华法林钠片", "YP0701", "2.5", "mg", "口服", "qd"),
    "美托洛尔": ("琥珀酸美托洛尔缓释片", "YP0702", "47.5", "mg", "口服", "qd"),
    "布地奈德福莫特罗": ("布地奈德福莫特罗吸入粉雾剂", "YP0801", None, None, "吸入", "bid"),
    "对乙酰氨基酚": ("对乙酰氨基酚片", "YP0901", "0.5", "g", "口服", "prn"),
    "阿莫西林": ("阿莫西林胶囊", "YP1001", "0.5", "g", "口服", "tid"),
    "阿奇霉素": ("阿奇霉素片", "YP1002", "0.5", "g", "口服", "qd"),
    "头孢曲松": ("注射用头孢曲松钠", "YP1003", "2", "g", "静脉滴注", "qd"),
    "左氧氟沙星": ("左氧氟沙星注射液", "YP1004", "0.5", "g", "静脉滴注", "qd"),
    "布洛芬": ("布洛芬缓释胶囊", "YP1101", "0.3", "g", "口服", "bid"),
    "布洛芬混悬液": ("布洛芬混悬液", "YP1102", "5", "mL", "口服", "prn"),
    "头孢呋辛": ("注射用头孢呋辛钠", "YP1005", "1.5", "g", "静脉滴注", "bid"),
    "紫杉醇": ("注射用紫杉醇", "YP1201", "240", "mg", "静脉滴注", "st"),
    "吉非替尼": ("吉非替尼片", "YP1202", "250", "mg", "口服", "qd"),
    "他莫昔芬": ("枸橼酸他莫昔芬片", "YP1203", "10", "mg", "口服", "bid"),
    "叶酸": ("叶酸片", "YP1301", "0.4", "mg", "口服", "qd"),
    "缩宫素": ("缩宫素注射液", "YP1302", "10", "U", "肌内注射", "st"),
    "米非司酮": ("米非司酮片", "YP1303", "10", "mg", "口服", "qd"),
    "呋塞米": ("呋塞米片", "YP1401", "20", "mg", "口服", "qd"),
    "螺内酯": ("螺内酯片", "YP1402", "20", "mg", "口服", "qd"),
    "阿司匹林嚼服": ("阿司匹林肠溶片", "YP0301", "300", "mg", "嚼服", "st"),
    "破伤风": ("破伤风抗毒素注射液", "YP1501", "1500", "IU", "肌内注射", "st"),
    "纳洛酮": ("盐酸纳洛酮注射液", "YP1502", "0.4", "mg", "静脉注射", "st"),
    "地西泮": ("地西泮注射液", "YP1503", "5", "mg", "静脉注射", "st"),
    "蒙脱石散": ("蒙脱石散", "YP1504", "3", "g", "口服", "tid"),
    "甘露醇": ("甘露醇注射液", "YP1505", "125", "mL", "静脉滴注", "q8h"),
}
_TREATMENT = {
    "原发性高血压": ("氨氯地平", "缬沙坦"), "2型糖尿病": ("二甲双胍", "阿卡波糖"),
    "冠状动脉粥样硬化性心脏病": ("阿司匹林", "阿托伐他汀"), "慢性阻塞性肺疾病": ("噻托溴铵",),
    "慢性胃炎": ("奥美拉唑",), "膝关节骨关节炎": ("塞来昔布",), "心房颤动": ("华法林", "美托洛尔"),
    "支气管哮喘": ("布地奈德福莫特罗",), "急性上呼吸道感染": ("对乙酰氨基酚",),
    "肺炎": ("头孢曲松",), "急性支气管炎": ("阿莫西林",), "手足口病": ("布洛芬混悬液",),
    "腰椎间盘突出症": ("塞来昔布",), "桡骨远端骨折": ("布洛芬",), "急性阑尾炎": ("头孢呋辛",),
    "腹股沟疝": ("头孢呋辛",), "胆囊结石伴慢性胆囊炎": ("头孢呋辛",),
    "脑梗死": ("阿司匹林", "阿托伐他汀", "甘露醇"),
    "左侧中央型肺鳞癌并纵膈淋巴结转移": ("紫杉醇",), "右肺上叶腺癌": ("吉非替尼",),
    "乳腺癌": ("他莫昔芬",), "早孕": ("叶酸",), "单胎顺产": ("缩宫素",),
    "子宫平滑肌瘤": ("米非司酮",), "慢性心力衰竭": ("呋塞米", "螺内酯"),
    "胸痛": ("阿司匹林嚼服",), "头皮裂伤": ("破伤风",), "急性酒精中毒": ("纳洛酮",),
    "高热惊厥": ("地西泮",), "急性胃肠炎": ("蒙脱石散",),
}
#: a penicillin allergy rules out the penicillin; the order goes to a macrolide instead
_AVOID = {"青霉素": {"阿莫西林": "阿奇霉素"}, "头孢类": {"头孢曲松": "左氧氟沙星",
                                                    "头孢呋辛": "左氧氟沙星"}}

# (substance, local code, category, criticality, reaction, weight)
_ALLERGENS = (
    ("青霉素", "GM01", "medication", "high", "过敏性休克", 2),
    ("青霉素", "GM01", "medication", "low", "皮疹", 6),
    ("磺胺类", "GM02", "medication", "low", "皮疹、瘙痒", 4),
    ("头孢类", "GM03", "medication", "low", "荨麻疹", 2),
    ("海鲜", "GM11", "food", "low", "荨麻疹", 4),
    ("花粉", "GM21", "environment", "low", "打喷嚏、流涕", 2),
)

# dx → ((modality, description, body part, series range, instances per series range), ...)
_IMAGING = {
    "左侧中央型肺鳞癌并纵膈淋巴结转移": (("CT", "胸部CT增强", "CHEST", (4, 6), (60, 300)),),
    "右肺上叶腺癌": (("CT", "胸部CT平扫", "CHEST", (3, 5), (60, 300)),),
    "肺炎": (("DX", "胸部正位片", "CHEST", (1, 1), (1, 2)),
             ("CT", "胸部CT平扫", "CHEST", (3, 5), (60, 300))),
    "慢性阻塞性肺疾病": (("CT", "胸部CT平扫", "CHEST", (3, 5), (60, 300)),),
    "桡骨远端骨折": (("DX", "腕关节正侧位片", "WRIST", (1, 2), (2, 2)),),
    "膝关节骨关节炎": (("DX", "膝关节正侧位片", "KNEE", (1, 2), (2, 2)),),
    "腰椎间盘突出症": (("MR", "腰椎MR平扫", "LSPINE", (4, 7), (15, 30)),),
    "脑梗死": (("CT", "头颅CT平扫", "HEAD", (2, 3), (30, 60)),
             ("MR", "头颅MR平扫+DWI", "HEAD", (5, 8), (20, 40))),
    "胆囊结石伴慢性胆囊炎": (("US", "肝胆胰脾彩超", "ABDOMEN", (1, 1), (8, 20)),),
    "急性阑尾炎": (("CT", "全腹部CT平扫", "ABDOMEN", (3, 4), (80, 200)),),
    "乳腺癌": (("MG", "双侧乳腺钼靶", "BREAST", (1, 2), (4, 4)),
             ("US", "乳腺彩超", "BREAST", (1, 1), (6, 12))),
    "早孕": (("US", "早孕超声", "PELVIS", (1, 1), (4, 10)),),
    "子宫平滑肌瘤": (("US", "子宫附件彩超", "PELVIS", (1, 1), (6, 12)),),
    "冠状动脉粥样硬化性心脏病": (("CT", "冠状动脉CTA", "HEART", (4, 8), (200, 400)),),
    "胸痛": (("CT", "胸部CT平扫", "CHEST", (3, 5), (60, 300)),),
    "头皮裂伤": (("CT", "头颅CT平扫", "HEAD", (2, 3), (30, 60)),),
}


@dataclass(frozen=True, slots=True)
class PatientContext:
    """What the clinical generator needs of one patient row: the row, the person's chronic
    diagnoses (texts) and their allergy, if any."""

    row: SiteRow
    chronic: tuple[str, ...]
    allergy: tuple | None


@dataclass(slots=True)
class SiteClinical:
    """One site's clinical records (lab reports and results always generated; the writer
    decides where they go — county-b's go to its LIS feed)."""

    reports: list[LabReportRecord] = field(default_factory=list)
    results: dict[str, list[LabResultRecord]] = field(default_factory=dict)  # by report id
    vitals: list[VitalSignRecord] = field(default_factory=list)
    medications: list[MedicationRecord] = field(default_factory=list)
    allergies: list[AllergyRecord] = field(default_factory=list)
    documents: list[DocumentRecord] = field(default_factory=list)
    studies: list[ImagingStudyRecord] = field(default_factory=list)


def person_allergy(rng: random.Random) -> tuple | None:
    """About one person in twelve has an allergy on record."""
    if rng.random() >= 1 / 12:
        return None
    return rng.choices(_ALLERGENS, [a[5] for a in _ALLERGENS])[0]


class _Ids:
    """Local ids per record kind: prefixed strings (vendor A) or integers (vendor B)."""

    def __init__(self, numeric: bool) -> None:
        self.numeric = numeric
        self.next: dict[str, int] = {}

    def __call__(self, kind: str, prefix: str, base: int) -> str:
        n = self.next.get(kind, base) + 1
        self.next[kind] = n
        return str(n) if self.numeric else f"{prefix}{n:09d}"


def make_site_clinical(rng: random.Random, site_number: int, visits: Sequence[SiteVisit],
                       patients: Mapping[str, PatientContext], *, numeric_ids: bool,
                       imaging: bool) -> SiteClinical:
    """The site's clinical records for ``visits`` (in their order, so deterministic)."""
    out, ids = SiteClinical(), _Ids(numeric_ids)
    seen_allergy: set[str] = set()
    for visit in visits:
        ctx = patients[visit.patient_local_id]
        if ctx.allergy is not None and visit.patient_local_id not in seen_allergy:
            seen_allergy.add(visit.patient_local_id)
            if rng.random() < 0.85:               # some sites never asked
                out.allergies.append(_allergy(ids, visit, ctx.allergy))
        _labs(rng, ids, out, visit, ctx)
        out.vitals += _vitals(rng, ids, visit, ctx)
        orders = list(_medications(rng, ids, visit, ctx))
        out.medications += orders
        if visit.kind == "inpatient" and visit.end is not None:
            out.documents.append(_discharge_summary(ids, visit, orders))
        if imaging:
            out.studies += _studies(rng, ids, site_number, visit)
    return out


def _allergy(ids: _Ids, visit: SiteVisit, allergen: tuple) -> AllergyRecord:
    substance, code, category, criticality, reaction, _ = allergen
    return AllergyRecord(local_id=ids("allergy", "GM", 0),
                         patient_local_id=visit.patient_local_id,
                         encounter_local_id=visit.local_id, substance=substance,
                         local_code=code, category=category, criticality=criticality,
                         reaction=reaction, recorded=visit.start)


def _panels(rng: random.Random, visit: SiteVisit, ctx: PatientContext) -> list[str]:
    dx = visit.diagnosis_text
    chosen: list[str] = []
    if visit.kind == "inpatient":
        chosen += ["CBC", "BIO"] + (["UA"] if rng.random() < 0.5 else [])
    elif visit.kind == "emergency":
        chosen += ["CBC"] if rng.random() < 0.7 else []
    elif dx in _INFECTION and rng.random() < 0.6:
        chosen += ["CBC"]
    elif dx == _DIABETES or (dx in ctx.chronic and rng.random() < 0.4):
        chosen += ["BIO"]
    elif rng.random() < 0.12:
        chosen += ["CBC"]
    if dx == _DIABETES or (_DIABETES in ctx.chronic and visit.kind == "inpatient"):
        chosen += ["A1C"]
    if dx in _INFECTION and "CBC" in chosen:
        chosen += ["CRP"]
    if dx in _CARDIAC and visit.kind != "outpatient":
        chosen += ["CARD"]
    return chosen


def _labs(rng: random.Random, ids: _Ids, out: SiteClinical, visit: SiteVisit,
          ctx: PatientContext) -> None:
    for panel in _panels(rng, visit, ctx):
        name, items = _PANELS[panel]
        taken = visit.start + dt.timedelta(minutes=rng.randint(20, 150))
        issued = taken + dt.timedelta(minutes=rng.randint(40, 300))
        report_id = ids("report", "L", 0)
        results = []
        for k, item in enumerate(items, start=1):
            local_id = f"{report_id}-{k}"         # the LIS's OBX set id is the suffix
            results.append(_result(rng, local_id, report_id, item, visit, ctx, taken))
        out.reports.append(LabReportRecord(
            local_id=report_id, patient_local_id=visit.patient_local_id,
            encounter_local_id=visit.local_id, name=name, local_code=panel, issued=issued,
            effective=taken, result_local_ids=tuple(r.local_id for r in results)))
        out.results[report_id] = results


def _result(rng: random.Random, local_id: str, report_id: str, item: str, visit: SiteVisit,
            ctx: PatientContext, taken: dt.datetime) -> LabResultRecord:
    common = {"local_id": local_id, "patient_local_id": visit.patient_local_id,
              "encounter_local_id": visit.local_id, "effective": taken,
              "report_local_id": report_id}
    if item in _TEXT_ITEMS:
        code, loinc, name = _TEXT_ITEMS[item]
        positive = rng.random() < (0.35 if item == "U-GLU" and _DIABETES in ctx.chronic
                                   else 0.06)
        value = rng.choice(("弱阳性", "+", "++")) if positive else "阴性"
        return LabResultRecord(**common, local_code=code, loinc_code=loinc, name=name,
                               value=value, numeric=False, reference_text="阴性",
                               abnormal_flag="A" if positive else None)
    code, loinc, name, unit, low, high, places, mean, sd = _ITEMS[item]
    mean, sd = _shift(item, mean, sd, visit.diagnosis_text, ctx)
    number = max(rng.gauss(mean, sd), 10 ** -places if places else 1)
    text = f"{number:.{places}f}"
    flag = None
    if low is not None and Decimal(text) < Decimal(low):
        flag = "L"
    elif Decimal(text) > Decimal(high):
        flag = "H"
    if item == "cTnI" and Decimal(text) < Decimal("0.010"):
        text, flag = "<0.010", None               # below the assay's detection limit
    return LabResultRecord(**common, local_code=code, loinc_code=loinc, name=name, value=text,
                           unit=unit, reference_low=Decimal(low) if low else None,
                           reference_high=Decimal(high), abnormal_flag=flag)


def _shift(item: str, mean: float, sd: float, dx: str, ctx: PatientContext
           ) -> tuple[float, float]:
    diabetic = dx == _DIABETES or _DIABETES in ctx.chronic
    if item in ("GLU", "HbA1c") and diabetic:
        return (8.6, 2.2) if item == "GLU" else (7.8, 1.1)
    if dx in _INFECTION and item in ("WBC", "NEUT%", "CRP"):
        return {"WBC": (12.5, 3.0), "NEUT%": (82, 6), "CRP": (48, 25)}[item]
    if item == "NT-proBNP" and dx == "慢性心力衰竭":
        return 1800, 700
    if item == "cTnI" and dx == "胸痛":
        return 0.05, 0.08
    if item == "HGB" and ctx.row.sex == "female":
        return 128, 11
    return mean, sd


def _vitals(rng: random.Random, ids: _Ids, visit: SiteVisit, ctx: PatientContext
            ) -> Iterator[VitalSignRecord]:
    if visit.kind == "outpatient" and rng.random() < 0.4 and \
            not ({_HYPERTENSION} | _CARDIAC) & {visit.diagnosis_text, *ctx.chronic}:
        return
    hypertensive = _HYPERTENSION in ctx.chronic or visit.diagnosis_text == _HYPERTENSION
    age = visit.start.year - ctx.row.birth_date.year
    days = 1 if visit.end is None or visit.kind != "inpatient" else \
        min(5, (visit.end.date() - visit.start.date()).days)
    for day in range(days):
        when = visit.start + dt.timedelta(days=day, minutes=rng.randint(10, 60))
        febrile = visit.diagnosis_text in _INFECTION and day < 2
        readings: list[tuple[str, str, str | None, str]] = []
        sys_mean = 148 if hypertensive else 112 + max(0, age - 30) * 0.3
        systolic = round(rng.gauss(sys_mean, 12))
        readings.append(("blood-pressure", str(systolic),
                         str(round(systolic * rng.uniform(0.58, 0.68))), "mmHg"))
        readings.append(("heart-rate", str(round(rng.gauss(88 if febrile else 76, 9))),
                         None, "次/分"))
        if visit.kind != "outpatient" or febrile:
            temperature = rng.gauss(38.6, 0.5) if febrile else rng.gauss(36.6, 0.25)
            readings.append(("body-temperature", f"{temperature:.1f}", None, "℃"))
        if visit.kind == "emergency" or (visit.kind == "inpatient" and day == 0):
            readings.append(("respiratory-rate", str(round(rng.gauss(18, 2))), None, "次/分"))
            readings.append(("oxygen-saturation", str(min(100, round(rng.gauss(97, 1.5)))),
                             None, "%"))
        if visit.kind == "inpatient" and day == 0:
            base = 3.5 + age * 3 if age < 14 else (70 if ctx.row.sex == "male" else 58)
            readings.append(("body-weight", f"{max(2.5, rng.gauss(base, base * 0.12)):.1f}",
                             None, "kg"))
        for kind, value, diastolic, unit in readings:
            yield VitalSignRecord(
                local_id=ids("vital", "VS", 0), patient_local_id=visit.patient_local_id,
                encounter_local_id=visit.local_id, kind=kind,  # type: ignore[arg-type]
                value=Decimal(value), diastolic=Decimal(diastolic) if diastolic else None,
                unit=unit, effective=when)


def _medications(rng: random.Random, ids: _Ids, visit: SiteVisit, ctx: PatientContext
                 ) -> Iterator[MedicationRecord]:
    drugs = list(_TREATMENT.get(visit.diagnosis_text, ()))
    if visit.kind != "emergency":
        for dx in ctx.chronic:                    # repeat prescriptions for chronic disease
            if dx != visit.diagnosis_text and rng.random() < 0.4:
                drugs.append(_TREATMENT[dx][0])
    substitutes = _AVOID.get(ctx.allergy[0], {}) if ctx.allergy else {}
    status = ("active" if visit.kind == "inpatient" and visit.end is None else
              "stopped" if visit.kind == "inpatient" else "completed")
    for drug in dict.fromkeys(substitutes.get(d, d) for d in drugs):
        name, code, dose, unit, route, frequency = _DRUGS[drug]
        yield MedicationRecord(
            local_id=ids("order", "YZ", 0), patient_local_id=visit.patient_local_id,
            encounter_local_id=visit.local_id, drug_name=name, local_code=code,
            dose_text=None if dose else "每次1吸", dose_quantity=Decimal(dose) if dose else None,
            dose_unit=unit, route=route, frequency=frequency,
            authored=visit.start + dt.timedelta(minutes=rng.randint(5, 90)), status=status)


def _discharge_summary(ids: _Ids, visit: SiteVisit, orders: list[MedicationRecord]
                       ) -> DocumentRecord:
    assert visit.end is not None
    drugs = "、".join(o.drug_name for o in orders) or "无"
    text = (f"出院小结\n科室：{visit.department}\n"
            f"入院日期：{visit.start:%Y-%m-%d}\n出院日期：{visit.end:%Y-%m-%d}\n"
            f"住院天数：{(visit.end.date() - visit.start.date()).days}天\n"
            f"入院诊断：{visit.diagnosis_text}\n出院诊断：{visit.diagnosis_text}\n"
            f"诊疗经过：入院后完善相关检查，予{drugs}等治疗，病情好转。\n"
            f"出院情况：一般情况可，生命体征平稳。\n"
            f"出院医嘱：规律用药，门诊随访，不适随诊。\n")
    return DocumentRecord(local_id=ids("document", "DS", 0),
                          patient_local_id=visit.patient_local_id,
                          encounter_local_id=visit.local_id, title="出院小结",
                          created=visit.end, content=text)


def _studies(rng: random.Random, ids: _Ids, site_number: int, visit: SiteVisit
             ) -> Iterator[ImagingStudyRecord]:
    options = _IMAGING.get(visit.diagnosis_text)
    if not options or rng.random() >= (0.9 if visit.kind != "outpatient" else 0.5):
        return
    picked = options if visit.kind == "inpatient" else options[:1]
    for modality, description, body_part, series, instances in picked:
        local_id = ids("study", "ST", 0)
        n_series = rng.randint(*series)
        number = local_id.lstrip("ST").lstrip("0")
        yield ImagingStudyRecord(
            local_id=local_id, patient_local_id=visit.patient_local_id,
            encounter_local_id=visit.local_id,
            study_uid=f"{DICOM_UID_ROOT}.{site_number}.{number}",
            accession_number=f"{modality}{visit.start:%Y%m%d}{number[-5:].zfill(5)}",
            modality=modality, started=visit.start + dt.timedelta(minutes=rng.randint(30, 240)),
            description=description, body_part=body_part, number_of_series=n_series,
            number_of_instances=n_series * rng.randint(*instances))
