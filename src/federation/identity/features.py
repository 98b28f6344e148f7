"""From one site's demographics to the features the EMPI compares.

Sites write the same person many ways; :func:`extract` brings one record's fields to one
form and says, as :class:`Problem` codes, what it had to drop. Every rule is here:

* **names** — NFKC, traditional → simplified (OpenCC ``t2s``), whitespace and middle-dot
  variants folded. A Chinese name is split into family and given name (compound surnames
  take two characters) unless the site sent them apart. Each name also has a pinyin form
  without tones (``pypinyin``), so homophones (张/章, 伟/玮) and pinyin-only vendors
  ('ZHANG Wei', 'Wei Zhang') meet Chinese-character records. A Latin name whose split
  is unknown keeps its tokens; the comparison tries both orders.
* **resident ID** (身份证号) — cleaned, 15-digit legacy IDs upgraded to 18 digits, the
  GB 11643 check digit verified with ``python-stdnum``. The birth date and sex the ID
  encodes are cross-checked against the record: an ID that contradicts the record, or
  fails its check digit, is *not used* for linking (problem ``id-*``). A valid ID fills a
  missing birth date or sex.
* **phone** — digits only, +86 / 0086 dropped; fewer than 7 digits is not a phone.
* **birth date** — the shapes sites write (see :func:`~federation.nodes.adapters.normalise.parse_date`);
  impossible dates and dates outside 1880…today are dropped (``birth-date-*``).
* **sex** — male/female from the usual spellings (M/F, 男/女, GB/T 2261 codes 1/2).
* **address** — split into tokens at administrative suffixes (省 市 区 县 镇 乡 街 路 村
  号 …) or at spaces for Latin addresses, so an address that drops its prefecture or
  county still overlaps the full one.

Features never carry the raw input, and :class:`Problem` messages never quote values.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import opencc
from pypinyin import Style, lazy_pinyin
from stdnum.cn import ric

from federation.errors import InvalidInput
from federation.nodes.adapters.normalise import (
    is_cjk,
    normalise_phone,
    parse_date,
    resident_id_key,
    split_name,
)

__all__ = ["INPUT_COLUMNS", "Features", "Problem", "extract"]

#: the columns of a demographics record, as the batch CLI reads them
INPUT_COLUMNS = ("record_id", "site", "name", "family_name", "given_name", "sex",
                 "birth_date", "national_id", "other_id", "phone", "address", "postcode")

_T2S = opencc.OpenCC("t2s")
_DOTS = str.maketrans({c: "·" for c in "•・･‧∙⋅"})
_LATIN_JUNK = re.compile(r"[^a-z\s]")
_ADDRESS_TOKEN = re.compile(
    r".+?(?:特别行政区|自治区|自治州|自治县|街道|社区|单元|省|市|州|盟|区|县|旗|镇|乡|"
    r"街|路|道|巷|弄|村|屯|组|号|栋|幢|楼|室)")
_ADDRESS_PUNCT = re.compile(r"[\s,，.。;；:：、()（）\-#/]+")
_SEX = {"male": "male", "m": "male", "男": "male", "1": "male", "man": "male",
        "female": "female", "f": "female", "女": "female", "2": "female", "woman": "female"}
_EARLIEST_BIRTH = dt.date(1880, 1, 1)


@dataclass(frozen=True, slots=True)
class Problem:
    """Something :func:`extract` dropped or doubted; ``message`` never quotes the value."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Features:
    site: str
    record_id: str
    #: the whole name, simplified and folded: 张伟 / 'zhang wei'
    name: str | None
    family: str | None
    given: str | None
    #: pinyin (or Latin letters) of family and given name, lower case, no spaces
    family_py: str | None
    given_py: str | None
    #: the name's letters in every plausible order ('zhangwei', 'weizhang')
    name_forms: frozenset[str]
    #: (family, given) letters for each plausible split: one when the site split the name
    #: or it is Chinese; two for a Latin name in unknown order ('Wei Zhang', 'ZHANG Wei')
    splits: tuple[tuple[str | None, str | None], ...]
    #: order-free key for blocking: the name's letters sorted
    name_key: str | None
    sex: str | None
    birth_date: dt.date | None
    national_id: str | None
    other_id: str | None
    phone: str | None
    address: str | None
    address_tokens: frozenset[str]
    postcode: str | None
    problems: tuple[Problem, ...] = ()

    @property
    def blank(self) -> bool:
        """Nothing to link on: stored, never linked to anyone."""
        return not (self.name_forms or self.national_id or self.other_id
                    or (self.birth_date and (self.phone or self.address_tokens)))

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "family": self.family, "given": self.given,
                "family_py": self.family_py, "given_py": self.given_py,
                "name_forms": sorted(self.name_forms), "name_key": self.name_key,
                "splits": [list(x) for x in self.splits],
                "sex": self.sex,
                "birth_date": self.birth_date.isoformat() if self.birth_date else None,
                "national_id": self.national_id, "other_id": self.other_id,
                "phone": self.phone, "address": self.address,
                "address_tokens": sorted(self.address_tokens), "postcode": self.postcode,
                "problems": [p.code for p in self.problems]}

    @classmethod
    def from_json(cls, site: str, record_id: str, data: Mapping[str, object]) -> Features:
        birth = data.get("birth_date")
        return cls(site=site, record_id=record_id, name=_s(data.get("name")),
                   family=_s(data.get("family")), given=_s(data.get("given")),
                   family_py=_s(data.get("family_py")), given_py=_s(data.get("given_py")),
                   name_forms=frozenset(data.get("name_forms") or ()),  # type: ignore[arg-type]
                   splits=tuple((_s(f), _s(g)) for f, g in data.get("splits") or ()),  # type: ignore[union-attr,misc]
                   name_key=_s(data.get("name_key")), sex=_s(data.get("sex")),
                   birth_date=dt.date.fromisoformat(str(birth)) if birth else None,
                   national_id=_s(data.get("national_id")), other_id=_s(data.get("other_id")),
                   phone=_s(data.get("phone")), address=_s(data.get("address")),
                   address_tokens=frozenset(data.get("address_tokens") or ()),  # type: ignore[arg-type]
                   postcode=_s(data.get("postcode")),
                   problems=tuple(Problem(str(c), "") for c in data.get("problems") or ()))  # type: ignore[union-attr]


def _s(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", str(value)).strip()
    return text or None


def extract(row: Mapping[str, object], *, today: dt.date | None = None) -> Features:
    """The features of one record (keys as in :data:`INPUT_COLUMNS`; any may be missing)."""
    problems: list[Problem] = []
    site = _clean(row.get("site")) or ""
    record_id = _clean(row.get("record_id")) or ""
    name, family, given, family_py, given_py, forms, splits = _names(row, problems)
    sex = _sex(row.get("sex"), problems)
    birth = _birth(row.get("birth_date"), today or dt.date.today(), problems)
    national_id, birth, sex = _national_id(row.get("national_id"), birth, sex, problems)
    phone = normalise_phone(_clean(row.get("phone")))
    if phone is not None and len(phone) < 7:
        problems.append(Problem("phone-short", "phone has fewer than 7 digits; not used"))
        phone = None
    other = _clean(row.get("other_id"))
    other_id = re.sub(r"[\s\-]", "", other).upper() or None if other else None
    address, tokens = _address(row.get("address"))
    postcode = re.sub(r"\s", "", _clean(row.get("postcode")) or "").upper() or None
    if not forms and _clean(row.get("name")) is None and not (family or given):
        problems.append(Problem("name-missing", "no name; linked on other fields only"))
    key = "".join(sorted(min(forms))) if forms else None
    return Features(site=site, record_id=record_id, name=name, family=family, given=given,
                    family_py=family_py, given_py=given_py, name_forms=forms, splits=splits,
                    name_key=key,
                    sex=sex, birth_date=birth, national_id=national_id, other_id=other_id,
                    phone=phone, address=address, address_tokens=tokens, postcode=postcode,
                    problems=tuple(problems))


# ------------------------------------------------------------------------------ names

@lru_cache(maxsize=65536)
def _simplified(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).translate(_DOTS)
    return _T2S.convert("".join(folded.split()))


@lru_cache(maxsize=65536)
def _pinyin(text: str) -> str:
    return "".join(lazy_pinyin(text, style=Style.NORMAL, errors="ignore")).lower()


def _latin(text: str) -> list[str]:
    letters = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(c for c in letters if not unicodedata.combining(c))
    return _LATIN_JUNK.sub(" ", letters).split()


def _part(value: object) -> tuple[str | None, str | None]:
    """(script form, letters) of one name part."""
    text = _clean(value)
    if text is None:
        return None, None
    if any(is_cjk(c) for c in text):
        simple = _simplified(text)
        return simple, _pinyin(simple) or None
    tokens = _latin(text)
    return (" ".join(tokens) or None), ("".join(tokens) or None)


def _names(row: Mapping[str, object], problems: list[Problem]
           ) -> tuple[str | None, str | None, str | None, str | None, str | None,
                      frozenset[str], tuple[tuple[str | None, str | None], ...]]:
    family, family_py = _part(row.get("family_name"))
    given, given_py = _part(row.get("given_name"))
    whole = _clean(row.get("name"))
    name: str | None = None
    splits: tuple[tuple[str | None, str | None], ...] = ()
    if whole is not None and any(is_cjk(c) for c in whole):
        name = _simplified(whole)
        if family is None and given is None:
            family, given = split_name(name)
            family_py = _pinyin(family) if family else None
            given_py = _pinyin(given) if given else None
        forms = {_pinyin(name)} if "·" in name else set()
    elif whole is not None:
        tokens = _latin(whole)
        name = " ".join(tokens) or None
        forms = set()
        if family is None and given is None:
            forms = {"".join(tokens[i:] + tokens[:i]) for i in range(len(tokens))}
            if len(tokens) >= 2:
                guesses = [(tokens[0], "".join(tokens[1:])), (tokens[-1], "".join(tokens[:-1]))]
                splits = tuple(dict.fromkeys(guesses))
            elif tokens:
                splits = ((None, tokens[0]),)
    else:
        forms = set()
    if family_py or given_py:
        splits = ((family_py, given_py),)
        parts = [p for p in (family_py, given_py) if p]
        forms |= {"".join(parts), "".join(reversed(parts))}
        if name is None:
            name = (family or "") + (given or "") if (family and is_cjk(family[0])) else \
                " ".join(p for p in (family, given) if p)
    if whole is not None and not forms:
        problems.append(Problem("name-unreadable", "name has no letters or characters"))
    forms.discard("")
    return name or None, family, given, family_py, given_py, frozenset(forms), splits


# ------------------------------------------------------------------------------ the rest

def _sex(value: object, problems: list[Problem]) -> str | None:
    text = _clean(value)
    if text is None:
        return None
    sex = _SEX.get(text.casefold())
    if sex is None and text.casefold() not in ("u", "unknown", "0", "9", "未知", "其他"):
        problems.append(Problem("sex-unknown", "sex is not one of male/female/M/F/男/女/1/2"))
    return sex


def _birth(value: object, today: dt.date, problems: list[Problem]) -> dt.date | None:
    text = _clean(value)
    if text is None:
        return None
    try:
        day = parse_date(text, what="birth date")
    except InvalidInput as exc:
        problems.append(Problem("birth-date-invalid", f"{exc.message}; not used"))
        return None
    if not _EARLIEST_BIRTH <= day <= today:
        problems.append(Problem("birth-date-impossible",
                                "birth date is in the future or before 1880; not used"))
        return None
    return day


def _national_id(value: object, birth: dt.date | None, sex: str | None,
                 problems: list[Problem]) -> tuple[str | None, dt.date | None, str | None]:
    key = resident_id_key(_clean(value))
    if key is None:
        return None, birth, sex
    if not ric.is_valid(key):
        problems.append(Problem("id-invalid", "resident ID fails the GB 11643 check "
                                "(length, birth date, region or check digit); not used"))
        return None, birth, sex
    id_birth = ric.get_birth_date(key)
    id_sex = "male" if int(key[16]) % 2 else "female"
    if birth is not None and birth != id_birth:
        problems.append(Problem("id-birth-conflict", "the birth date encoded in the resident "
                                "ID differs from the record's birth date; ID not used"))
        return None, birth, sex
    if sex is not None and sex != id_sex:
        problems.append(Problem("id-sex-conflict", "the sex encoded in the resident ID "
                                "differs from the record's sex; ID not used"))
        return None, birth, sex
    return key, birth or id_birth, sex or id_sex


def _address(value: object) -> tuple[str | None, frozenset[str]]:
    text = _clean(value)
    if text is None:
        return None, frozenset()
    if any(is_cjk(c) for c in text):
        simple = _ADDRESS_PUNCT.sub("", _simplified(text))
        tokens = _ADDRESS_TOKEN.findall(simple)
        rest = simple[sum(len(t) for t in tokens):]
        return simple or None, frozenset(tokens + ([rest] if rest else []))
    tokens = _latin(text.replace("-", " ")) + re.findall(r"\d+", text)
    return (" ".join(tokens) or None), frozenset(tokens)
