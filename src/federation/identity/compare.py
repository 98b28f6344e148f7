"""Field comparisons: how alike two records are, field by field, as agreement levels.

Each comparison turns a pair of :class:`~federation.identity.features.Features` into a
level — 0 is "disagree", higher is closer agreement — or :data:`NULL` when either side
lacks the field (a missing value is no evidence either way). The Fellegi–Sunter model
(:mod:`federation.identity.model`) learns how likely each level is among true matches
(m) and among random pairs (u); the levels themselves are fixed here:

============  ==============================================================================
field         levels (highest first)
============  ==============================================================================
family        3 same characters · 2 same sound (张/章, pinyin records) · 1 Jaro–Winkler ≥ 0.88
given         4 same characters · 3 same sound · 2 Jaro–Winkler ≥ 0.92 · 1 ≥ 0.80; two
              Chinese names: 2 one character apart by a dialect confusion, else 0
birth_date    3 same day · 2 one typo (≤ 2 days, day/month swapped, one digit) · 1 same year
sex           1 same
national_id   1 same (only IDs that passed the GB 11643 cross-checks take part)
other_id      2 same · 1 one edit apart (an edit: a character changed, added, dropped or
              two neighbours swapped — optimal string alignment)
phone         2 same · 1 one edit apart or same last 8 digits
address       3 same tokens · 2 one contains the other, or ≤ 2 typos with the same numbers
              · 1 ≥ 40 % of the shorter one's tokens shared (same street, other house)
postcode      2 same · 1 same first 3 characters
============  ==============================================================================

Names are compared under the best alignment of the two records' family/given splits, so
'Wei Zhang' meets 张伟 whichever order the vendor wrote, and a name written into the
wrong columns ('joselyn' / 'dakin') meets the one written right.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, lazy_pinyin
from rapidfuzz.distance import OSA, JaroWinkler, Levenshtein

from federation.identity.features import Features
from federation.nodes.adapters.normalise import is_cjk

__all__ = ["COMPARISONS", "FIELDS", "NULL", "Comparison", "compare"]

NULL = -1
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Comparison:
    field: str
    #: descriptions of levels 0…n, for reviewers ("why are these the same person?")
    levels: tuple[str, ...]


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("family", ("different", "similar spelling", "same sound", "same characters")),
    Comparison("given", ("different", "loosely similar", "similar spelling", "same sound",
                         "same characters")),
    Comparison("birth_date", ("different", "same year", "one typo apart", "same day")),
    Comparison("sex", ("different", "same")),
    Comparison("national_id", ("different", "same")),
    Comparison("other_id", ("different", "one edit apart", "same")),
    Comparison("phone", ("different", "one edit or last 8 digits", "same")),
    Comparison("address", ("different", "partly shared", "mostly shared", "same")),
    Comparison("postcode", ("different", "same area", "same")),
)
FIELDS: tuple[str, ...] = tuple(c.field for c in COMPARISONS)


def _family(a: str | None, b: str | None, a_script: str | None, b_script: str | None) -> int:
    if not a or not b:
        return NULL
    if a == b:
        return 3 if a_script == b_script else 2
    return 1 if JaroWinkler.similarity(a, b) >= 0.88 else 0


def _given(a: str | None, b: str | None, a_script: str | None, b_script: str | None) -> int:
    if not a or not b:
        return NULL
    if a == b:
        return 4 if a_script == b_script else 3
    if a_script and b_script and is_cjk(a_script[0]) and is_cjk(b_script[0]):
        return _given_chinese(a_script, b_script)
    sim = JaroWinkler.similarity(a, b)
    return 2 if sim >= 0.92 else 1 if sim >= 0.80 else 0


def _given_chinese(a: str, b: str) -> int:
    """Two Chinese given names that do not sound the same: one character apart by a
    dialect confusion (z/zh, c/ch, s/sh, n/l, -n/-ng: 陈珍/陈铮) is a likely slip (2);
    any other difference is a different name (0). Twins are often named 明波 and 明雪,
    or 可悦 and 可宇: a shared character is no evidence of one person."""
    sa, sb = _syllables(a), _syllables(b)
    if len(sa) != len(sb):
        return 0
    diff = [(x, y) for x, y in zip(sa, sb) if x != y]
    if len(diff) == 1 and _dialect(diff[0][0]) == _dialect(diff[0][1]):
        return 2
    return 0


def _dialect(syllable: str) -> str:
    """A syllable with the distinctions many dialects blur folded away."""
    s = syllable
    if s[:2] in ("zh", "ch", "sh"):
        s = s[0] + s[2:]
    if s.startswith("l"):
        s = "n" + s[1:]
    if s.endswith("ng"):
        s = s[:-1]
    return s


@lru_cache(maxsize=65536)
def _syllables(text: str) -> tuple[str, ...]:
    return tuple(lazy_pinyin(text, style=Style.NORMAL, errors="ignore"))



def _alignments(f: Features, *, swapped: bool
                ) -> tuple[tuple[str | None, str | None, str | None, str | None], ...]:
    """(family letters, given letters, family script, given script) for each order the
    record's name may be in. A split the site made is tried as written and, with
    ``swapped``, the other way round: clerks put the given name in the family column
    often enough (FEBRL's 'joselyn dakin' for 'dakin joselyn'). A guessed split of a
    Latin name already has both orders among its splits."""
    if len(f.splits) != 1:
        return tuple((fa, ga, fa, ga) for fa, ga in f.splits)
    (fa, ga), = f.splits
    written = (fa, ga, f.family, f.given)
    if not (swapped and fa and ga):
        return (written,)
    return written, (ga, fa, f.given, f.family)


def _names(a: Features, b: Features) -> tuple[int, int]:
    if not a.splits or not b.splits:
        if not a.name_forms or not b.name_forms:
            return NULL, NULL
        if a.name_forms & b.name_forms:
            return NULL, 4 if a.name == b.name else 3
        sim = max(JaroWinkler.similarity(x, y) for x in a.name_forms for y in b.name_forms)
        return NULL, 2 if sim >= 0.92 else 1 if sim >= 0.80 else 0
    best, rank = (NULL, NULL), -10
    for fa, ga, sfa, sga in _alignments(a, swapped=True):    # swapping one side is enough
        for fb, gb, sfb, sgb in _alignments(b, swapped=False):
            levels = (_family(fa, fb, sfa, sfb), _given(ga, gb, sga, sgb))
            # the family level counts double: 'ZHANG Jiejing' and 'ZHANG Zhitao' share a
            # surname, and must not pass for two people who share the given name 'zhang'
            if 2 * levels[0] + levels[1] > rank:
                best, rank = levels, 2 * levels[0] + levels[1]
    return best


def _birth(a: dt.date | None, b: dt.date | None) -> int:
    if a is None or b is None:
        return NULL
    if a == b:
        return 3
    if (abs((a - b).days) <= 2 or (a.year == b.year and a.month == b.day and a.day == b.month)
            or Levenshtein.distance(a.strftime("%Y%m%d"), b.strftime("%Y%m%d")) <= 1):
        return 2
    return 1 if a.year == b.year else 0


def _exact(a: str | None, b: str | None) -> int:
    if not a or not b:
        return NULL
    return 1 if a == b else 0


def _edit(a: str | None, b: str | None) -> int:
    if not a or not b:
        return NULL
    if a == b:
        return 2
    return 1 if OSA.distance(a, b, score_cutoff=1) <= 1 else 0


def _phone(a: str | None, b: str | None) -> int:
    if not a or not b:
        return NULL
    if a == b:
        return 2
    return 1 if (a[-8:] == b[-8:] or OSA.distance(a, b, score_cutoff=1) <= 1) else 0


def _address(a: Features, b: Features) -> int:
    ta, tb = a.address_tokens, b.address_tokens
    if not ta or not tb:
        return NULL
    if ta == tb:
        return 3
    if ta <= tb or tb <= ta:
        return 2          # one drops parts (prefecture, county) the other keeps
    if (a.address and b.address and _DIGITS.findall(a.address) == _DIGITS.findall(b.address)
            and Levenshtein.distance(a.address, b.address, score_cutoff=2) <= 2):
        return 2          # a typo, same house number
    shared = len(ta & tb) / min(len(ta), len(tb))
    return 1 if shared >= 0.4 else 0


def _postcode(a: str | None, b: str | None) -> int:
    if not a or not b:
        return NULL
    if a == b:
        return 2
    return 1 if a[:3] == b[:3] else 0


_REST: tuple[Callable[[Features, Features], int], ...] = (
    lambda a, b: _birth(a.birth_date, b.birth_date),
    lambda a, b: _exact(a.sex, b.sex),
    lambda a, b: _exact(a.national_id, b.national_id),
    lambda a, b: _edit(a.other_id, b.other_id),
    lambda a, b: _phone(a.phone, b.phone),
    _address,
    lambda a, b: _postcode(a.postcode, b.postcode),
)


def compare(a: Features, b: Features) -> tuple[int, ...]:
    """The agreement level of every field in :data:`FIELDS` order (:data:`NULL` = absent)."""
    return _names(a, b) + tuple(f(a, b) for f in _REST)
