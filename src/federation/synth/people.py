"""Synthetic residents of the fictional prefecture 青岚市: the truth before any site's noise.

Names come from weighted surname lists (with a few compound surnames such as 欧阳) and
given-name pools by sex and birth era; resident IDs are valid GB 11643 numbers (birth
date, sex parity and check digit computed with ``stdnum.cn.ric``); households share a
phone and an address. The hard cases the EMPI must handle are planted on purpose:
twins (same birth date, address and phone, different given names), families sharing a
phone and address, and same-name-same-birthday strangers.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Literal

from stdnum.cn import ric

__all__ = [
    "AREAS",
    "PREFECTURE",
    "Person",
    "Population",
    "make_population",
    "random_phone",
    "resident_id",
]

Sex = Literal["male", "female"]
PREFECTURE = "青岚市"

# Surnames with rough frequency weights; compound surnames are rare on purpose.
_SURNAMES = (
    ("王", 70), ("李", 70), ("张", 65), ("刘", 50), ("陈", 45), ("杨", 30), ("黄", 22),
    ("赵", 20), ("吴", 18), ("周", 18), ("徐", 15), ("孙", 14), ("马", 13), ("朱", 12),
    ("胡", 12), ("郭", 11), ("何", 10), ("高", 10), ("林", 10), ("罗", 9), ("郑", 9),
    ("梁", 8), ("谢", 7), ("宋", 7), ("唐", 7), ("许", 7), ("韩", 6), ("冯", 6), ("邓", 6),
    ("曹", 5), ("彭", 5), ("曾", 5), ("田", 5), ("董", 5), ("袁", 4), ("潘", 4), ("蒋", 4),
    ("蔡", 4), ("余", 4), ("杜", 4), ("叶", 4), ("程", 4), ("苏", 4), ("魏", 4), ("吕", 4),
    ("丁", 4), ("沈", 3), ("卢", 3), ("钟", 3), ("陆", 3), ("汪", 3), ("章", 3), ("龙", 3),
    ("欧阳", 2), ("司马", 1), ("诸葛", 1), ("上官", 1),
)
# Given-name characters by sex and birth era (older: 建国, 秀英; younger: 子轩, 欣怡).
_GIVEN = {
    ("male", "old"): "国建华军明德志文永庆福海林春东贵荣兴忠平成富山",
    ("male", "mid"): "伟强军明勇杰涛斌峰辉鹏超刚波磊华建志东亮平俊飞",
    ("male", "young"): "浩宇轩子梓博睿然俊杰鑫凯文涵晨航一泽嘉豪明",
    ("female", "old"): "秀英兰芳玉珍桂华凤琴梅淑春霞荣翠云莲英",
    ("female", "mid"): "丽静敏燕艳娟霞芳玲红英萍婷慧莉洁琳颖晶雪",
    ("female", "young"): "欣怡涵梓萱雨婷佳琪可馨悦妍子晗诗雯语瑶",
}

#: residence areas: (county part of the address, places) — site ids double as areas
AREAS = {
    "city-1": ("城关区", ("人民路", "解放路", "中山路", "建设路", "滨江路", "朝阳路")),
    "county-a": ("东阳县城关镇", ("新华街", "文化路", "胜利路", "东门街")),
    "county-b": ("西河县河口镇", ("长江路", "西大街", "河滨路", "工农路")),
    "township-a1": ("东阳县石门镇", ("上坪", "下河", "桃源", "石桥", "新田", "龙潭")),
    "township-a2": ("东阳县白沙乡", ("白沙", "竹园", "大塘", "枫树", "高坪")),
    "township-b1": ("西河县柳林镇", ("柳林", "黄土岭", "杨柳", "河湾", "马家坪")),
}
_AREA_WEIGHTS = {"township-a1": 20, "township-a2": 20, "township-b1": 20,
                 "county-a": 13, "county-b": 12, "city-1": 15}
# GB/T 2260 codes that stdnum knows for every birth year 1930–2020 (the prefecture is
# fictional; its codes are borrowed). Migrants carry codes from elsewhere.
_REGION = {"city-1": "532322", "county-a": "532323", "township-a1": "532323",
           "township-a2": "532323", "county-b": "532324", "township-b1": "532324"}
_MIGRANT_REGIONS = ("532325", "532326", "532328", "433122", "433123", "330122", "330127")
_MOBILE_PREFIXES = tuple(f"13{d}" for d in range(10)) + tuple(
    f"15{d}" for d in (0, 1, 2, 3, 5, 6, 7, 8, 9)) + tuple(f"18{d}" for d in range(10))


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    surname: str
    given: str
    sex: Sex
    birth_date: dt.date
    resident_id: str
    phone: str
    address: str
    home: str          # residence area (a site id)
    household: str

    @property
    def name(self) -> str:
        return self.surname + self.given


@dataclass(frozen=True, slots=True)
class Population:
    people: tuple[Person, ...]
    #: planted hard cases, as person-id groups: twins, households, namesakes
    hard_cases: dict[str, list[list[str]]] = field(default_factory=dict)


def resident_id(region: str, birth: dt.date, sex: Sex, order: int) -> str:
    """An 18-digit GB 11643 ID: region, YYYYMMDD, 3-digit order code whose last digit is
    odd for men and even for women, then the ISO 7064 MOD 11-2 check character."""
    order = order - order % 2 + (1 if sex == "male" else 0)
    body = f"{region}{birth:%Y%m%d}{order % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")


def random_phone(rng: random.Random) -> str:
    return rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def _birth_date(rng: random.Random, lo: int = 1930, hi: int = 2020) -> dt.date:
    year = min(hi, max(lo, round(rng.triangular(lo, hi, 1958))))
    return dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(365))


def _surname(rng: random.Random) -> str:
    names, weights = zip(*_SURNAMES, strict=True)
    return rng.choices(names, weights)[0]


def _given(rng: random.Random, sex: Sex, birth: dt.date) -> str:
    era = "old" if birth.year < 1965 else "mid" if birth.year < 1992 else "young"
    pool = _GIVEN[(sex, era)]
    first = rng.choice(pool)
    if rng.random() < 0.25:
        return first
    return first + rng.choice(pool.replace(first, ""))


def _address(rng: random.Random, home: str) -> str:
    county, places = AREAS[home]
    place = rng.choice(places)
    if home.startswith("township"):
        return f"{PREFECTURE}{county}{place}村{rng.randint(1, 9)}组{rng.randint(1, 60)}号"
    if home == "city-1":
        return (f"{PREFECTURE}{county}{place}{rng.randint(1, 300)}号{rng.randint(1, 20)}栋"
                f"{rng.randint(1, 4)}单元{rng.randint(1, 18)}0{rng.randint(1, 4)}室")
    return f"{PREFECTURE}{county}{place}{rng.randint(1, 200)}号"


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.people: list[Person] = []
        self.ids: set[str] = set()
        self.phones: set[str] = set()

    def unique_phone(self) -> str:
        while (phone := random_phone(self.rng)) in self.phones:
            pass
        self.phones.add(phone)
        return phone

    def unique_id(self, home: str, birth: dt.date, sex: Sex, order: int | None = None) -> str:
        rng = self.rng
        region = _REGION[home] if rng.random() < 0.85 else rng.choice(_MIGRANT_REGIONS)
        order = rng.randrange(1000) if order is None else order
        while (rid := resident_id(region, birth, sex, order)) in self.ids:
            order = rng.randrange(1000)
        self.ids.add(rid)
        return rid

    def add(self, home: str, household: str, phone: str, address: str, *,
            surname: str | None = None, sex: Sex | None = None, birth: dt.date | None = None,
            given: str | None = None, order: int | None = None) -> Person:
        rng = self.rng
        sex = sex or rng.choice(("male", "female"))
        birth = birth or _birth_date(rng)
        person = Person(
            person_id=f"person-{len(self.people) + 1:05d}",
            surname=surname or _surname(rng),
            given=given or _given(rng, sex, birth),
            sex=sex, birth_date=birth,
            resident_id=self.unique_id(home, birth, sex, order),
            phone=phone, address=address, home=home, household=household,
        )
        self.people.append(person)
        return person


def make_population(rng: random.Random, count: int) -> Population:
    """``count`` people (at least 20): households first, then the planted hard cases."""
    count = max(count, 20)
    b = _Builder(rng)
    hard: dict[str, list[list[str]]] = {"twins": [], "households": [], "namesakes": []}
    areas, weights = zip(*_AREA_WEIGHTS.items(), strict=True)
    n_twins, n_namesakes = max(2, count // 60), max(2, count // 100)
    household = 0
    while len(b.people) < count - 2 * n_twins - n_namesakes:
        household += 1
        home = rng.choices(areas, weights)[0]
        hid, phone, address = f"household-{household:05d}", b.unique_phone(), _address(rng, home)
        head = b.add(home, hid, phone, address)
        if rng.random() < 0.25 and len(b.people) < count - 2 * n_twins - n_namesakes - 1:
            members = [head, *_family(b, head, home, hid, phone, address)]
            if len(members) > 1:
                hard["households"].append([p.person_id for p in members])
    for _ in range(n_twins):
        household += 1
        home = rng.choices(areas, weights)[0]
        hid, phone, address = f"household-{household:05d}", b.unique_phone(), _address(rng, home)
        birth, surname, order = _birth_date(rng, 1950, 2018), _surname(rng), rng.randrange(996)
        first = b.add(home, hid, phone, address, surname=surname, birth=birth, order=order)
        shared = first.given[0] if len(first.given) == 2 and rng.random() < 0.6 else ""
        while True:
            sex: Sex = rng.choice(("male", "female"))
            given = shared + _given(rng, sex, birth)[: 2 - len(shared)]
            if given != first.given:
                break
        second = b.add(home, hid, phone, address, surname=surname, birth=birth, sex=sex,
                       given=given, order=order + 2)
        hard["twins"].append([first.person_id, second.person_id])
    for original in rng.sample(b.people[: len(b.people) // 2], n_namesakes):
        household += 1
        twin = b.add(original.home, f"household-{household:05d}", b.unique_phone(),
                     _address(rng, original.home), surname=original.surname,
                     given=original.given, sex=original.sex, birth=original.birth_date)
        hard["namesakes"].append([original.person_id, twin.person_id])
    return Population(tuple(b.people), hard)


def _family(b: _Builder, head: Person, home: str, hid: str, phone: str,
            address: str) -> list[Person]:
    """A spouse (own surname), sometimes a child: all on the head's phone and address."""
    rng = b.rng
    added = []
    if head.birth_date.year <= 2000:
        sex: Sex = "female" if head.sex == "male" else "male"
        birth = head.birth_date + dt.timedelta(days=rng.randint(-5 * 365, 5 * 365))
        birth = min(max(birth, dt.date(1930, 1, 1)), dt.date(2002, 12, 31))
        added.append(b.add(home, hid, phone, address, sex=sex, birth=birth))
    if head.birth_date.year <= 1990 and rng.random() < 0.6:
        father = head if head.sex == "male" else (added[0] if added else head)
        birth = head.birth_date + dt.timedelta(days=rng.randint(22 * 365, 35 * 365))
        added.append(b.add(home, hid, phone, address, surname=father.surname,
                           birth=min(birth, dt.date(2020, 12, 31))))
    return added

