"""FHIR search parameters over the archive: parsed once, strictly, into a typed query.

FHIR R4 search (§3.1.1, http://hl7.org/fhir/R4/search.html) lets a server ignore
parameters it does not know unless the client asks ``Prefer: handling=strict``
(§3.1.1.3.5). A clinical archive that silently ignored ``date=ge2024-01-01`` would
return the wrong results, so this parser is always strict: every parameter it does not
support — unknown names, modifiers (``code:text``), chains, repeats that make no sense —
is refused with one :class:`~federation.errors.InvalidInput` naming all of them, which
the HTTP edge turns into a 400 OperationOutcome.

Supported, per resource type (:data:`SEARCH_PARAMETERS`):

* ``patient`` / ``subject`` (reference, required): ``Patient/<id>`` or ``<id>``, where
  the id is an EMPI person id or any site's Patient id (resolved by the EMPI);
* ``code``, ``category`` (token, §3.1.1.4.9): ``system|code``, ``|code`` (no system),
  ``code`` (any system), ``system|`` (any code of the system); commas are OR, repeats AND;
* ``date`` (§3.1.1.4.5): ``[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]][zone]]]]`` with prefixes
  ``eq ne gt lt ge le sa eb`` (``ap`` is refused); the value's precision makes it a range;
  a time without zone is China time (+08:00, where the sites are); repeats AND;
* ``_count`` (0…:data:`MAX_COUNT`, default :data:`DEFAULT_COUNT`), ``_offset`` (paging,
  what next links carry), ``_sort`` = ``date`` | ``-date``, ``_format`` = JSON.

Everything here is pure: no SQL ever sees a value, so injection attempts are just values
that match nothing (and tests fuzz this module with hypothesis).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from federation.errors import InvalidInput

__all__ = [
    "DATE_PREFIXES",
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "RESULT_PARAMETERS",
    "SEARCH_PARAMETERS",
    "DateRange",
    "SearchQuery",
    "Token",
    "date_range",
    "parse_search",
]

DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_VALUE_LENGTH = 256
SITE_TZ = dt.timezone(dt.timedelta(hours=8))
#: result parameters every search accepts (§3.1.1.5)
RESULT_PARAMETERS = frozenset({"_count", "_offset", "_sort", "_format"})
#: resource type → its search parameters (besides the result parameters)
SEARCH_PARAMETERS: dict[str, frozenset[str]] = {
    "Observation": frozenset({"patient", "subject", "code", "category", "date"}),
    "Condition": frozenset({"patient", "subject", "code", "category"}),
    "MedicationRequest": frozenset({"patient", "subject", "date"}),
    "Encounter": frozenset({"patient", "subject", "date"}),
    "DiagnosticReport": frozenset({"patient", "subject", "code", "category", "date"}),
    "DocumentReference": frozenset({"patient", "subject", "date"}),
    "AllergyIntolerance": frozenset({"patient"}),
}
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class Token:
    """One token value: ``system`` None = any system, "" = no system; ``code`` None = any."""

    system: str | None
    code: str | None

    def matches(self, codings: Iterable[tuple[str | None, str | None]]) -> bool:
        for system, code in codings:
            if self.system is not None and (system or "") != self.system:
                continue
            if self.code is not None and code != self.code:
                continue
            return True
        return False


@dataclass(frozen=True, slots=True)
class DateRange:
    """A date value as the half-open range its precision covers, with its prefix."""

    prefix: str
    start: dt.datetime
    end: dt.datetime
    text: str = ""

    def matches(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Does a resource's date range [start, end) satisfy this parameter (§3.1.1.4.5)?"""
        p = self.prefix
        if p == "eq":
            return self.start <= start and end <= self.end
        if p == "ne":
            return not (self.start <= start and end <= self.end)
        if p == "gt":
            return end > self.end
        if p == "lt":
            return start < self.start
        if p == "ge":
            return end > self.start
        if p == "le":
            return start < self.end
        if p == "sa":
            return start >= self.end
        return end <= self.start  # eb


@dataclass(frozen=True, slots=True)
class SearchQuery:
    resource_type: str
    patient: str
    codes: tuple[tuple[Token, ...], ...] = ()        # AND of ORs
    categories: tuple[tuple[Token, ...], ...] = ()
    dates: tuple[DateRange, ...] = ()                # AND
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort_desc: bool | None = None                    # None: the archive's own order

    def canonical(self) -> list[tuple[str, str]]:
        """The query as parameters again (for self and next links), without paging."""
        out = [("patient", self.patient)]
        out += [("code", ",".join(_token_text(t) for t in ors)) for ors in self.codes]
        out += [("category", ",".join(_token_text(t) for t in ors)) for ors in self.categories]
        out += [("date", d.prefix + d.text) for d in self.dates]
        if self.sort_desc is not None:
            out.append(("_sort", "-date" if self.sort_desc else "date"))
        out.append(("_count", str(self.count)))
        return out


def _token_text(t: Token) -> str:
    if t.system is None:
        return t.code or ""
    return f"{t.system}|{t.code or ''}"


def parse_search(resource_type: str, params: Iterable[tuple[str, str]]) -> SearchQuery:
    """Parse a search of ``resource_type`` (query parameters in order, repeats kept)."""
    if resource_type not in SEARCH_PARAMETERS:
        raise InvalidInput(f"searching {resource_type!r} is not supported; the archive "
                           f"searches {', '.join(sorted(SEARCH_PARAMETERS))}")
    allowed = SEARCH_PARAMETERS[resource_type] | RESULT_PARAMETERS
    items = list(params)
    unsupported = sorted({name for name, _ in items if name not in allowed})
    if unsupported:
        raise InvalidInput(
            f"unsupported search parameter{'s' if len(unsupported) > 1 else ''} for "
            f"{resource_type}: {', '.join(map(repr, unsupported))} (the archive is strict, as "
            f"FHIR 'Prefer: handling=strict'); supported: {', '.join(sorted(allowed))}")
    values: dict[str, list[str]] = {}
    for name, value in items:
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidInput(f"parameter {name!r} is longer than {MAX_VALUE_LENGTH} characters")
        values.setdefault(name, []).append(value)
    for name in ("patient", "subject", "_count", "_offset", "_sort", "_format"):
        if len(values.get(name, [])) > 1:
            raise InvalidInput(f"give parameter {name!r} once")
    if "patient" in values and "subject" in values:
        raise InvalidInput("give either 'patient' or 'subject', not both")
    raw_patient = (values.get("patient") or values.get("subject") or [None])[0]
    if raw_patient is None:
        raise InvalidInput(f"a search of {resource_type} in the regional archive needs "
                           "'patient' (one person's record; access is decided per person)")
    fmt = (values.get("_format") or [None])[0]
    if fmt is not None and fmt not in _JSON_FORMATS:
        raise InvalidInput("only JSON is served: _format must be json or application/fhir+json")
    return SearchQuery(
        resource_type=resource_type,
        patient=_patient(raw_patient),
        codes=tuple(_tokens("code", v) for v in values.get("code", [])),
        categories=tuple(_tokens("category", v) for v in values.get("category", [])),
        dates=tuple(_date_param(v) for v in values.get("date", [])),
        count=_int("_count", (values.get("_count") or [str(DEFAULT_COUNT)])[0], MAX_COUNT),
        offset=_int("_offset", (values.get("_offset") or ["0"])[0], 10_000_000),
        sort_desc=_sort((values.get("_sort") or [None])[0]),
    )


def _patient(value: str) -> str:
    ref = value.strip()
    if ref.startswith("Patient/"):
        ref = ref[len("Patient/"):]
    if not _ID.fullmatch(ref):
        raise InvalidInput("'patient' must be Patient/<id> or <id> (a FHIR id: letters, "
                           "digits, '-' and '.', at most 64)")
    return ref


def _tokens(name: str, value: str) -> tuple[Token, ...]:
    out = []
    for part in value.split(","):
        if not part:
            raise InvalidInput(f"parameter {name!r} has an empty value")
        if "|" in part:
            system, _, code = part.partition("|")
            if "|" in code:
                raise InvalidInput(f"parameter {name!r}: a token is system|code, with one '|'")
            out.append(Token(system, code or None))
        else:
            out.append(Token(None, part))
        if out[-1].system is not None and out[-1].system == "" and out[-1].code is None:
            raise InvalidInput(f"parameter {name!r}: '|' alone names no code")
    return tuple(out)


def _date_param(value: str) -> DateRange:
    prefix = value[:2] if value[:2].isalpha() else "eq"
    if value[:2].isalpha() and prefix not in DATE_PREFIXES:
        raise InvalidInput(f"date prefix {value[:2]!r} is not supported; use one of "
                           f"{', '.join(DATE_PREFIXES)}")
    text = value[2:] if value[:2].isalpha() else value
    parsed = date_range(text)
    if parsed is None:
        raise InvalidInput("'date' must be [prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]], "
                           "e.g. ge2024-01-01")
    return DateRange(prefix, *parsed, text=text)


def date_range(text: str) -> tuple[dt.datetime, dt.datetime] | None:
    """A FHIR date/dateTime/instant as the aware range [start, end) its precision covers;
    None when it is not one."""
    m = _DATE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    tz = SITE_TZ
    if m["tz"] == "Z":
        tz = dt.UTC
    elif m["tz"]:
        sign = 1 if m["tz"][0] == "+" else -1
        hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
        if hours > 14 or minutes > 59:
            return None
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        start, end = _bounds(m, tz)
        return start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


def _bounds(m: re.Match[str], tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    year = int(m["y"])
    if m["m"] is None:
        start = dt.datetime(year, 1, 1, tzinfo=tz)
        return start, start.replace(year=year + 1)
    month = int(m["m"])
    if m["d"] is None:
        start = dt.datetime(year, month, 1, tzinfo=tz)
        return start, (start.replace(month=month + 1) if month < 12
                       else start.replace(year=year + 1, month=1))
    day = int(m["d"])
    if m["H"] is None:
        start = dt.datetime(year, month, day, tzinfo=tz)
        return start, start + dt.timedelta(days=1)
    if m["S"] is None:
        start = dt.datetime(year, month, day, int(m["H"]), int(m["M"]), tzinfo=tz)
        return start, start + dt.timedelta(minutes=1)
    micro = int((m["f"] or "0")[:6].ljust(6, "0"))
    start = dt.datetime(year, month, day, int(m["H"]), int(m["M"]), int(m["S"]), micro,
                        tzinfo=tz)
    return start, start + (dt.timedelta(microseconds=1) if m["f"] else dt.timedelta(seconds=1))


def _int(name: str, value: str, maximum: int) -> int:
    if not value.isascii() or not value.isdigit():
        raise InvalidInput(f"{name} must be a whole number from 0 to {maximum}")
    number = int(value)
    if number > maximum:
        raise InvalidInput(f"{name} must be at most {maximum}")
    return number


def _sort(value: str | None) -> bool | None:
    if value is None:
        return None
    if value not in ("date", "-date"):
        raise InvalidInput(f"_sort={value!r} is not supported; sort by 'date' or '-date'")
    return value == "-date"
