"""Pure normalisation shared by every site adapter: dates, phones, resident IDs, names.

Sites write the same facts many ways — '1962-3-5', '19620305', '1962年3月5日'; '+86 138
1234 5678'; a 15-digit legacy ID; 陳 for 陈. These functions bring them to one form so that
search (PDQm semantics, see :class:`federation.nodes.model.PatientQuery`) compares like with
like. Errors are :class:`InvalidInput` whose messages describe the *shape* of the bad value
(digits shown as ``9``), never the value: a birth date or ID number is patient data.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from stdnum.cn import ric

from federation.errors import InvalidInput, SourceError

__all__ = [
    "COMPOUND_SURNAMES",
    "decode_export",
    "read_export",
    "TRADITIONAL_TO_SIMPLIFIED",
    "fold_name",
    "is_cjk",
    "is_valid_resident_id",
    "legacy_resident_id",
    "normalise_phone",
    "normalise_resident_id",
    "parse_date",
    "parse_datetime",
    "resident_id_key",
    "split_name",
    "upgrade_resident_id",
    "value_shape",
]

# Traditional → simplified for characters common in personal names (pairs: trad, simp).
# A stand-in for a full converter such as OpenCC; it covers at least every character the
# synthetic generator writes in traditional form (tests/nodes/test_normalise.py checks).
_PAIRS = (
    "陳陈劉刘張张楊杨黃黄趙赵吳吴孫孙馬马鄭郑羅罗謝谢許许韓韩馮冯鄧邓蕭萧盧卢蔣蒋蘇苏"
    "呂吕葉叶鍾钟鐘钟譚谭陸陆賈贾韋韦鄒邹龍龙陽阳歐欧諸诸顧顾龔龚錢钱嚴严萬万湯汤閆闫"
    "閻阎遲迟聶聂龐庞鄔邬賀贺壽寿駱骆鄺邝費费"
    "偉伟瑋玮煒炜華华樺桦驊骅國国軍军鈞钧麗丽銘铭鳴鸣靜静強强剛刚濤涛韜韬輝辉暉晖"
    "鵬鹏飛飞寧宁蘭兰嵐岚紅红鴻鸿艷艳豔艳鳳凤鈴铃俠侠穎颖潔洁凱凯鍇锴傑杰東东雲云"
    "語语軒轩榮荣貴贵廣广慶庆愛爱鋒锋楓枫豐丰瑩莹濱滨儀仪頤颐駿骏學学興兴發发寶宝"
    "嫻娴紀纪衛卫賢贤長长連连進进達达義义禮礼勝胜蓮莲鵑鹃蘋苹劍剑聞闻詠咏薔蔷帥帅"
    "勳勋歡欢樂乐嬌娇鶯莺綺绮詩诗夢梦瑤瑶靈灵韻韵藝艺維维綱纲繼继順顺懷怀書书師师"
    "祿禄財财寬宽鎮镇釗钊銳锐澤泽則则遙遥鈺钰蕓芸鋼钢誠诚"
)
TRADITIONAL_TO_SIMPLIFIED: dict[str, str] = {
    _PAIRS[i]: _PAIRS[i + 1] for i in range(0, len(_PAIRS), 2) if _PAIRS[i] != _PAIRS[i + 1]
}
_TRAD_TABLE = str.maketrans(TRADITIONAL_TO_SIMPLIFIED)
# Middle-dot variants in transliterated minority names (买买提·艾力) fold to U+00B7.
_DOT_TABLE = str.maketrans({c: "·" for c in "•・･‧∙⋅"})

COMPOUND_SURNAMES = frozenset((
    "欧阳", "司马", "诸葛", "上官", "东方", "夏侯", "皇甫", "尉迟", "慕容", "司徒", "令狐",
    "公孙", "轩辕", "独孤", "长孙", "宇文", "端木", "西门", "南宫", "闻人", "呼延", "申屠",
    "澹台", "公冶", "太史", "万俟",
))

_DATE_PATTERNS = (
    re.compile(r"(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})"),
    re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"),
    re.compile(r"(?P<y>\d{4})年(?P<m>\d{1,2})月(?P<d>\d{1,2})日?"),
)
_TIME = re.compile(r"(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?")
_COMPACT_DATETIME = re.compile(r"(?P<date>\d{8})(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})?")
_DATE_FORMS = "YYYY-MM-DD, YYYY-M-D, YYYY/MM/DD, YYYYMMDD or YYYY年M月D日"


def value_shape(value: object) -> str:
    """A value's shape for error messages: digits as 9, letters as a, others as ?."""
    text = str(value)[:32]
    return "".join("9" if c.isdigit() else "a" if c.isascii() and c.isalpha()
                   else c if c in " -/:.年月日T" else "?" for c in text)


def _fold_text(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def _strptime_any(text: str, formats: Iterable[str]) -> dt.datetime | None:
    for fmt in formats:
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _date_from_match(m: re.Match[str], what: str, raw: str) -> dt.date:
    try:
        return dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
    except ValueError:
        raise InvalidInput(
            f"{what} '{value_shape(raw)}' is not a calendar date", code="bad-date") from None


def parse_date(value: str | dt.date, *, formats: Iterable[str] = (), what: str = "date") -> dt.date:
    """A date as sites write it: declared ``formats`` first, then the common shapes.

    Accepts YYYY-MM-DD (zero padding optional, '-', '/' or '.'), YYYYMMDD and
    YYYY年M月D日, optionally followed by a midnight-style time part ('1962-03-05 00:00:00',
    as Excel writes dates).
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = _fold_text(str(value))
    if not text:
        raise InvalidInput(f"{what} is blank", code="bad-date")
    parsed = _strptime_any(text, formats)
    if parsed is not None:
        return parsed.date()
    head = re.split(r"[ T]", text, maxsplit=1)[0]
    for pattern in _DATE_PATTERNS:
        m = pattern.fullmatch(head)
        if m:
            return _date_from_match(m, what, text)
    raise InvalidInput(
        f"{what} '{value_shape(text)}' has an unrecognised format (expected {_DATE_FORMS})",
        code="bad-date")


def parse_datetime(value: str | dt.datetime, *, formats: Iterable[str] = (),
                   what: str = "date-time") -> dt.datetime:
    """A local (naive) date-time: a date in any :func:`parse_date` shape plus HH:MM[:SS].

    Also YYYYMMDDHHMM[SS] and ISO 8601 with 'T'. A date alone means midnight. Sites record
    local wall-clock time, so a trailing UTC offset, if any, is ignored.
    """
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    text = _fold_text(str(value))
    if not text:
        raise InvalidInput(f"{what} is blank", code="bad-date")
    parsed = _strptime_any(text, formats)
    if parsed is not None:
        return parsed
    m = _COMPACT_DATETIME.fullmatch(text)
    if m:
        day = parse_date(m["date"], what=what)
        return _combine(day, m["H"], m["M"], m["S"], what, text)
    parts = re.split(r"[ T]+", text, maxsplit=1)
    day = parse_date(parts[0], what=what)
    if len(parts) == 1:
        return dt.datetime.combine(day, dt.time())
    t = _TIME.match(parts[1])
    if not t:
        raise InvalidInput(f"{what} '{value_shape(text)}' has an unrecognised time part",
                           code="bad-date")
    return _combine(day, t["H"], t["M"], t["S"], what, text)


def _combine(day: dt.date, h: str, m: str, s: str | None, what: str, raw: str) -> dt.datetime:
    try:
        return dt.datetime.combine(day, dt.time(int(h), int(m), int(s or 0)))
    except ValueError:
        raise InvalidInput(f"{what} '{value_shape(raw)}' is not a valid time",
                           code="bad-date") from None


def normalise_phone(value: str | None) -> str | None:
    """Digits only, without the +86 / 0086 country prefix; None when nothing is left."""
    if value is None:
        return None
    text = _fold_text(str(value))
    digits = re.sub(r"\D", "", text)
    if text.startswith("+") and digits.startswith("86"):
        digits = digits[2:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]
    return digits or None


def normalise_resident_id(value: str | None) -> str | None:
    """The ID as read, cleaned: full-width folded, spaces/dashes and Excel's leading
    apostrophe removed, check character 'x' upper-cased. Length is *not* changed."""
    if value is None:
        return None
    text = re.sub(r"[\s\-]", "", _fold_text(str(value))).lstrip("'").upper()
    return text or None


def _is_id18(text: str) -> bool:
    return len(text) == 18 and text[:17].isdigit() and (text[17].isdigit() or text[17] == "X")


def upgrade_resident_id(value: str) -> str:
    """A 15-digit legacy ID (YYMMDD, no check digit, issued before 1999) as its 18-digit
    form per GB 11643-1999: '19' inserted before the year and the check digit computed.
    An 18-digit ID is returned cleaned; anything else raises :class:`InvalidInput`."""
    text = normalise_resident_id(value) or ""
    if _is_id18(text):
        return text
    if len(text) == 15 and text.isdigit():
        body = text[:6] + "19" + text[6:]
        return body + ric.calc_check_digit(body + "0")
    raise InvalidInput(
        f"resident ID must be 15 or 18 characters, got '{value_shape(text)}'", code="bad-id")


def legacy_resident_id(value: str) -> str | None:
    """The 15-digit form an 18-digit ID would have had (only for births in the 1900s)."""
    text = normalise_resident_id(value) or ""
    if _is_id18(text) and text[6:8] == "19":
        return text[:6] + text[8:17]
    return None


def resident_id_key(value: str | None) -> str | None:
    """The comparison key: the 18-digit form when the shape allows, else the cleaned text."""
    text = normalise_resident_id(value)
    if text is None:
        return None
    try:
        return upgrade_resident_id(text)
    except InvalidInput:
        return text


def is_valid_resident_id(value: str | None) -> bool:
    """GB 11643 check: 18 characters, check digit, real birth date and birth place code."""
    return bool(value) and ric.is_valid(normalise_resident_id(value) or "")


def fold_name(value: str) -> str:
    """A name's search key: NFKC (full-width folded), no whitespace, traditional →
    simplified, middle-dot variants unified, case-folded (for pinyin)."""
    text = unicodedata.normalize("NFKC", value)
    text = "".join(text.split()).translate(_DOT_TABLE).translate(_TRAD_TABLE)
    return text.casefold()


def split_name(name: str) -> tuple[str | None, str | None]:
    """(family, given) of a Chinese name; compound surnames (欧阳, 司马…) take two characters.

    Names written with a middle dot (transliterated minority names) or in Latin letters
    have no reliable split and give (None, None). A name that starts with a compound
    surname's characters is taken to have that surname — the usual registry convention.
    """
    text = "".join(unicodedata.normalize("NFKC", name).split())
    if not text or "·" in text.translate(_DOT_TABLE) or not all(is_cjk(c) for c in text):
        return None, None
    if len(text) == 1:
        return text, None
    if len(text) >= 3 and text[:2].translate(_TRAD_TABLE) in COMPOUND_SURNAMES:
        return text[:2], text[2:]
    return text[0], text[1:]


def is_cjk(char: str) -> bool:
    """A CJK unified ideograph (basic block, extension A, extensions B and later)."""
    return "\u3400" <= char <= "\u9fff" or "\U00020000" <= char <= "\U0003134f"


def decode_export(data: bytes, *, gb18030_first: bool = False) -> str | None:
    """Text of a site export: UTF-8 (a BOM tolerated) or GB18030 (older Excel and HIS
    interfaces); None when it is neither."""
    order = ["utf-8-sig", "gb18030"]
    if gb18030_first:
        order.reverse()
    for encoding in order:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def read_export(path: Path, label: str) -> str:
    """A whole export file as text (see :func:`decode_export`); SourceError naming
    ``label`` when it is neither encoding."""
    text = decode_export(path.read_bytes())
    if text is None:
        raise SourceError(f"{label} is neither UTF-8 nor GB18030 text")
    return text
