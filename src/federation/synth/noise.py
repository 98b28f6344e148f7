"""Per-appearance noise: how one person's demographics drift between sites' records.

Each time a person is registered at a site, the record is derived from the truth and
perturbed with fixed, documented rates (probability per appearance; "of eligible"
means only appearances where the perturbation is possible count):

=============================  =======  ===================================================
kind                           rate     what happens
=============================  =======  ===================================================
surname_homophone              0.02     张→章, 徐→许, 王→汪 … (of eligible surnames)
given_name_homophone           0.06     one given-name character → a homophone (伟→玮)
traditional_chars              0.05     every convertible character → traditional (陈→陳)
name_spacing                   0.02     a space (ASCII or full-width) between the names
birth_day_typo                 0.01     birth day off by 1–2 days (same month)
missing_resident_id.<tier>     city 0.03, county 0.10, township 0.40
legacy_15_digit_id             0.05     of appearances with an ID, born ≤ 1995: 15 digits
missing_phone                  0.03     no phone recorded
phone_changed                  0.08     of phones kept: an older/other number
phone_formatting               0.15     of phones kept: +86, 0086, spaces or dashes
address_abbreviated.<tier>     township 0.50, others 0.15: prefecture/county dropped
=============================  =======  ===================================================

``NoiseLog`` counts eligible and applied appearances per kind; ``noise.json`` reports
both, so tests and readers can check the realised rates against these.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field

from federation.synth.people import AREAS, PREFECTURE, Person, random_phone

__all__ = [
    "GIVEN_HOMOPHONES",
    "SIMPLIFIED_TO_TRADITIONAL",
    "SURNAME_HOMOPHONES",
    "Appearance",
    "NoiseLog",
    "NoiseRates",
    "apply_noise",
    "to_traditional",
]

_GIVEN_GROUPS = (
    "伟玮炜", "丽莉俐", "明铭鸣", "静靖婧", "军君钧", "芳方", "华桦骅", "红虹鸿", "玲铃苓",
    "峰锋枫丰", "杰洁捷", "婷亭", "燕艳雁", "涛韬", "霞侠", "兰岚", "梅玫", "英瑛", "斌彬滨",
    "春椿", "宇羽雨语", "浩昊皓", "鹏朋", "晶菁", "飞菲", "凯楷锴", "建健剑", "志智", "文雯闻",
    "东冬", "永勇咏", "平萍苹", "辉晖", "涵晗寒", "轩萱宣", "欣新鑫馨", "怡宜仪", "颖影",
    "俊峻骏", "梓子紫", "琳林霖", "娟鹃", "敏民", "慧惠", "琪祺淇", "瑶遥", "睿锐瑞", "航杭",
    "嘉佳家", "晨辰臣", "悦越月", "诗师", "贵桂", "荣蓉融", "兴星", "忠中", "成诚", "山珊",
    "玉钰毓", "珍真", "琴勤芹", "翠萃", "云芸耘", "莲连", "刚钢",
)
#: character → its homophones in given names (groups are disjoint)
GIVEN_HOMOPHONES: dict[str, str] = {c: g.replace(c, "") for g in _GIVEN_GROUPS for c in g}
#: surname → a real surname pronounced the same (not 陈/程: chén ≠ chéng)
SURNAME_HOMOPHONES: dict[str, str] = {
    "张": "章", "章": "张", "徐": "许", "许": "徐", "王": "汪", "汪": "王", "刘": "柳",
    "吴": "伍", "杨": "阳", "朱": "诸", "李": "黎",
}
_TRAD_PAIRS = (
    "陈陳刘劉张張杨楊黄黃赵趙吴吳孙孫马馬郑鄭罗羅谢謝许許韩韓冯馮邓鄧苏蘇吕呂叶葉钟鍾"
    "陆陸龙龍欧歐阳陽诸諸卢盧蒋蔣伟偉华華国國军軍丽麗强強涛濤辉輝鹏鵬刚剛飞飛兰蘭凤鳳"
    "莲蓮荣榮兴興贵貴东東庆慶艳艷红紅杰傑凯凱轩軒诗詩语語瑶瑤云雲泽澤静靜洁潔颖穎"
    "玮瑋炜煒铭銘鸣鳴钧鈞桦樺骅驊鸿鴻铃鈴锋鋒枫楓丰豐韬韜侠俠岚嵐滨濱剑劍闻聞咏詠苹蘋"
    "晖暉仪儀骏駿鹃鵑锐銳则則师師遥遙钰鈺芸蕓连連钢鋼诚誠锴鍇"
)
#: simplified → traditional for every character the generator may write traditionally
SIMPLIFIED_TO_TRADITIONAL: dict[str, str] = {
    _TRAD_PAIRS[i]: _TRAD_PAIRS[i + 1] for i in range(0, len(_TRAD_PAIRS), 2)}
_TRAD = str.maketrans(SIMPLIFIED_TO_TRADITIONAL)


def to_traditional(text: str) -> str:
    return text.translate(_TRAD)


@dataclass(frozen=True, slots=True)
class NoiseRates:
    """The documented rates (see the module docstring); override for experiments."""

    surname_homophone: float = 0.02
    given_name_homophone: float = 0.06
    traditional_chars: float = 0.05
    name_spacing: float = 0.02
    birth_day_typo: float = 0.01
    missing_resident_id_city: float = 0.03
    missing_resident_id_county: float = 0.10
    missing_resident_id_township: float = 0.40
    legacy_15_digit_id: float = 0.05
    missing_phone: float = 0.03
    phone_changed: float = 0.08
    phone_formatting: float = 0.15
    address_abbreviated_township: float = 0.50
    address_abbreviated_other: float = 0.15

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class NoiseLog:
    eligible: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)

    def draw(self, rng: random.Random, kind: str, rate: float, eligible: bool = True) -> bool:
        """One Bernoulli draw, always consumed (so the stream does not depend on
        eligibility), counted when eligible."""
        hit = rng.random() < rate
        if not eligible:
            return False
        self.eligible[kind] += 1
        self.applied[kind] += hit
        return hit


@dataclass(frozen=True, slots=True)
class Appearance:
    """What one site recorded about one person (before the vendor's formatting)."""

    person_id: str
    site_id: str
    name: str
    sex: str
    birth_date: dt.date
    resident_id: str | None
    phone: str | None
    address: str


def apply_noise(rng: random.Random, person: Person, site_id: str, tier: str,
                rates: NoiseRates, log: NoiseLog) -> Appearance:
    """The person as ``site_id`` (of ``tier``) recorded them, noise drawn in a fixed order."""
    surname, given = person.surname, person.given
    if log.draw(rng, "surname_homophone", rates.surname_homophone,
                surname in SURNAME_HOMOPHONES):
        surname = SURNAME_HOMOPHONES[surname]
    swappable = [i for i, c in enumerate(given) if c in GIVEN_HOMOPHONES]
    pick = rng.random()
    if log.draw(rng, "given_name_homophone", rates.given_name_homophone, bool(swappable)):
        i = swappable[int(pick * len(swappable))]
        given = given[:i] + rng.choice(GIVEN_HOMOPHONES[given[i]]) + given[i + 1:]
    name = surname + given
    if log.draw(rng, "traditional_chars", rates.traditional_chars,
                to_traditional(name) != name):
        surname, given = to_traditional(surname), to_traditional(given)
    space = rng.choice((" ", "\u3000"))
    if log.draw(rng, "name_spacing", rates.name_spacing):
        surname += space
    birth = person.birth_date
    shift = rng.choice((-2, -1, 1, 2))
    if log.draw(rng, "birth_day_typo", rates.birth_day_typo):
        birth = _shift_day(birth, shift)
    return Appearance(
        person_id=person.person_id, site_id=site_id, name=surname + given, sex=person.sex,
        birth_date=birth, resident_id=_resident_id(rng, person, tier, rates, log),
        phone=_phone(rng, person, rates, log), address=_address(rng, person, tier, rates, log),
    )


def _shift_day(day: dt.date, by: int) -> dt.date:
    moved = day + dt.timedelta(days=by)
    return moved if moved.month == day.month else day - dt.timedelta(days=by)


def _resident_id(rng: random.Random, person: Person, tier: str, rates: NoiseRates,
                 log: NoiseLog) -> str | None:
    missing = getattr(rates, f"missing_resident_id_{tier}")
    if log.draw(rng, f"missing_resident_id.{tier}", missing):
        return None
    rid = person.resident_id
    if log.draw(rng, "legacy_15_digit_id", rates.legacy_15_digit_id,
                person.birth_date.year <= 1995):
        return rid[:6] + rid[8:17]
    return rid


def _phone(rng: random.Random, person: Person, rates: NoiseRates, log: NoiseLog) -> str | None:
    other, style = random_phone(rng), rng.randrange(5)
    if log.draw(rng, "missing_phone", rates.missing_phone):
        return None
    phone = person.phone
    if log.draw(rng, "phone_changed", rates.phone_changed):
        phone = other
    if log.draw(rng, "phone_formatting", rates.phone_formatting):
        a, b, c = phone[:3], phone[3:7], phone[7:]
        phone = (f"+86 {a} {b} {c}", f"+86{phone}", f"0086-{phone}", f"{a}-{b}-{c}",
                 f"{a} {b} {c}")[style]
    return phone


def _address(rng: random.Random, person: Person, tier: str, rates: NoiseRates,
             log: NoiseLog) -> str:
    rate = rates.address_abbreviated_township if tier == "township" \
        else rates.address_abbreviated_other
    kind = "address_abbreviated.township" if tier == "township" else "address_abbreviated.other"
    if not log.draw(rng, kind, rate):
        return person.address
    short = person.address.removeprefix(PREFECTURE)
    if tier == "township":  # the health centre knows its county; 石门镇上坪村…
        county = AREAS[person.home][0]
        short = short.removeprefix(county[:3]) if len(county) > 3 else short
    return short
