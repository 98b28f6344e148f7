"""The one interface every site adapter implements, and the matching they share.

An adapter reads a site's own system (never writes it) and returns normalised
:mod:`federation.nodes.model` records. Rows it cannot parse are skipped and kept in
``adapter.quarantine`` as ``(row key, reason)``; the reason and the WARNING log line carry
the row key only, never patient data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import re
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, Union, get_args, get_origin, get_type_hints

from federation.errors import InvalidInput
from federation.nodes.adapters.normalise import (
    fold_name,
    normalise_phone,
    normalise_resident_id,
    parse_date,
    parse_datetime,
    resident_id_key,
    split_name,
    value_shape,
)
from federation.nodes.model import (
    ClinicalRecord,
    EncounterRecord,
    Gender,
    PatientQuery,
    PatientRecord,
)

__all__ = [
    "Formats",
    "PreparedQuery",
    "SourceAdapter",
    "ValueMaps",
    "encounter_from_fields",
    "patient_from_fields",
    "record_fields",
    "record_from_fields",
    "record_matches",
]

#: per field, stored code → record value (e.g. {"gender": {"1": "male"}})
ValueMaps = Mapping[str, Mapping[str, str]]
#: per field, strptime formats to try before the common shapes
Formats = Mapping[str, Sequence[str]]

GENDERS: frozenset[str] = frozenset(get_args(Gender))
KINDS = frozenset(("outpatient", "inpatient", "emergency"))
STATUSES = frozenset(("planned", "in-progress", "finished", "cancelled"))

log = logging.getLogger("federation.node.adapter")
R = TypeVar("R")


class PreparedQuery:
    """A :class:`PatientQuery` with its criteria normalised once, for matching many rows."""

    __slots__ = ("family", "given", "name", "phone", "query", "raw_identifier", "resident_key")

    def __init__(self, query: PatientQuery) -> None:
        self.query = query
        self.name = fold_name(query.name) if query.name else None
        self.family = fold_name(query.family) if query.family else None
        self.given = fold_name(query.given) if query.given else None
        self.raw_identifier = (query.identifier or "").strip() or None
        self.resident_key = resident_id_key(query.identifier) if query.identifier else None
        self.phone = normalise_phone(query.phone) if query.phone else None

    def matches(self, rec: PatientRecord) -> bool:
        """PDQm semantics: every given criterion must hold."""
        q = self.query
        if q.birth_date is not None and rec.birth_date != q.birth_date:
            return False
        if q.gender is not None and rec.gender != q.gender:
            return False
        if self.name is not None and self.name not in fold_name(rec.name):
            return False
        if self.family is not None and fold_name(rec.family or "") != self.family:
            return False
        if self.given is not None and fold_name(rec.given or "") != self.given:
            return False
        if self.phone is not None and normalise_phone(rec.phone) != self.phone:
            return False
        return self.raw_identifier is None or self._identifier_matches(rec)

    def first_matches(self, records: Iterable[PatientRecord | None]) -> list[PatientRecord]:
        """The first ``query.limit`` records that match, in the given order (None, a row
        that did not parse, is skipped); stops reading ``records`` once it has them."""
        if self.query.limit <= 0:
            return []
        found = []
        for rec in records:
            if rec is not None and self.matches(rec):
                found.append(rec)
                if len(found) >= self.query.limit:
                    break
        return found

    def _identifier_matches(self, rec: PatientRecord) -> bool:
        if rec.local_id == self.raw_identifier:
            return True
        if not rec.resident_id or self.resident_key is None:
            return False
        return resident_id_key(rec.resident_id) == self.resident_key


def record_matches(query: PatientQuery, rec: PatientRecord) -> bool:
    """Whether one record satisfies the query (see :class:`PatientQuery` for semantics)."""
    return PreparedQuery(query).matches(rec)


class SourceAdapter(ABC):
    """Read-only access to one site's patients and visits, as normalised records."""

    def __init__(self) -> None:
        #: rows skipped because they could not be parsed: (local id or row number, reason)
        self.quarantine: list[tuple[str, str]] = []
        self._quarantined: set[str] = set()

    @abstractmethod
    def search_patients(self, query: PatientQuery) -> list[PatientRecord]:
        """Patients matching every criterion, in local-id order, at most ``query.limit``."""

    @abstractmethod
    def get_patient(self, local_id: str) -> PatientRecord | None:
        """One patient by local id; None if unknown or quarantined."""

    @abstractmethod
    def encounters(self, patient_local_id: str) -> list[EncounterRecord]:
        """The patient's visits, oldest first (unparseable visits quarantined)."""

    def clinical(self, patient_local_id: str) -> list[ClinicalRecord]:
        """The patient's clinical records (diagnoses, labs, vitals, reports, studies,
        orders, allergies, documents) this source holds, in a stable order; rows that do
        not parse are quarantined. Sources without clinical data keep this default."""
        return []

    def source_stamp(self) -> object | None:
        """Something that changes whenever the source may have changed (file times and
        sizes), so the node can skip rescanning an unchanged source; None = unknown."""
        return None

    @abstractmethod
    def count_patients(self) -> int:
        """Patient rows the source holds, including rows that quarantine when read."""

    @abstractmethod
    def iter_patient_ids(self) -> Iterator[str]:
        """Every patient row's local id (for the node's FHIR-id reverse index)."""

    @abstractmethod
    def close(self) -> None:
        """Release the source (connections, file handles); idempotent."""

    def _quarantine(self, key: str, reason: str) -> None:
        """Record a skipped row once; the log line names the row key, never its content."""
        if key in self._quarantined:
            return
        self._quarantined.add(key)
        self.quarantine.append((key, reason))
        log.warning("%s: skipped source row %s: %s", type(self).__name__, key, reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()



def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _required(fields: Mapping[str, Any], name: str, label: str) -> str:
    text = _text(fields.get(name))
    if text is None:
        raise InvalidInput(f"{label} is blank", code="blank")
    return text


def _coded(fields: Mapping[str, Any], name: str, values: ValueMaps,
           allowed: frozenset[str], label: str) -> str | None:
    """A coded field through the value map; codes the map does not know are refused
    (a mapping gap must show up, not become a silent default)."""
    raw = _text(fields.get(name))
    if raw is None:
        return None
    mapped = values.get(name, {}).get(raw, raw)
    if mapped not in allowed:
        raise InvalidInput(f"{label} code is not in the mapping", code="unmapped")
    return mapped


def patient_from_fields(fields: Mapping[str, Any], *, values: ValueMaps | None = None,
                        formats: Formats | None = None) -> PatientRecord:
    """A :class:`PatientRecord` from one row's raw values keyed by record field name.

    Raises :class:`InvalidInput` (message without patient data) when the row is unusable.
    """
    values, formats = values or {}, formats or {}
    name = _required(fields, "name", "name")
    family, given = _text(fields.get("family")), _text(fields.get("given"))
    if family is None and given is None:
        family, given = split_name(name)
    birth, updated = _text(fields.get("birth_date")), _text(fields.get("updated_at"))
    return PatientRecord(
        local_id=_required(fields, "local_id", "local patient id"),
        name=" ".join(name.split()),
        family=family,
        given=given,
        gender=_coded(fields, "gender", values, GENDERS, "gender") or "unknown",  # type: ignore[arg-type]
        birth_date=parse_date(birth, formats=formats.get("birth_date", ()),
                              what="birth date") if birth else None,
        resident_id=normalise_resident_id(_text(fields.get("resident_id"))),
        phone=normalise_phone(_text(fields.get("phone"))),
        address=_text(fields.get("address")),
        updated_at=parse_datetime(updated, formats=formats.get("updated_at", ()),
                                  what="last-updated time") if updated else None,
    )


def encounter_from_fields(fields: Mapping[str, Any], *, values: ValueMaps | None = None,
                          formats: Formats | None = None) -> EncounterRecord:
    """An :class:`EncounterRecord` from one row's raw values keyed by record field name.

    Without a status column, an inpatient stay with no discharge time is in progress;
    every other visit is finished.
    """
    values, formats = values or {}, formats or {}
    kind = _coded(fields, "kind", values, KINDS, "visit type")
    if kind is None:
        raise InvalidInput("visit type is blank", code="blank")
    start = parse_datetime(_required(fields, "start", "visit start"),
                           formats=formats.get("start", ()), what="visit start")
    end_raw = _text(fields.get("end"))
    end = parse_datetime(end_raw, formats=formats.get("end", ()), what="visit end") \
        if end_raw else None
    if end is not None and end < start:
        raise InvalidInput("visit ends before it starts", code="bad-period")
    status = _coded(fields, "status", values, STATUSES, "visit status")
    if status is None:
        status = "in-progress" if kind == "inpatient" and end is None else "finished"
    return EncounterRecord(
        local_id=_required(fields, "local_id", "visit id"),
        patient_local_id=_required(fields, "patient_local_id", "visit's patient id"),
        kind=kind,  # type: ignore[arg-type]
        start=start,
        end=end,
        department=_text(fields.get("department")),
        diagnosis_text=_text(fields.get("diagnosis_text")),
        diagnosis_code=_text(fields.get("diagnosis_code")),
        status=status,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------ generic record conversion

_TRUE = frozenset(("1", "true", "t", "y", "yes", "是"))
_FALSE = frozenset(("0", "false", "f", "n", "no", "否"))
_LIST_SEPARATORS = re.compile(r"[,;，；]")


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    required: bool
    convert: Callable[[str, str, Formats], Any]   # (text, field name, formats) → value


def record_fields(cls: type) -> dict[str, bool]:
    """A record dataclass's fields, each with whether it is required (has no default)."""
    return {f.name: f.required for f in _field_specs(cls)}


def record_from_fields(cls: type[R], fields: Mapping[str, Any], *,
                       values: ValueMaps | None = None, formats: Formats | None = None) -> R:
    """One record of dataclass ``cls`` from a row's raw values keyed by record field name.

    Each field is converted by its declared type: ``str``; ``datetime`` / ``date`` through
    :func:`parse_datetime` / :func:`parse_date` with the field's ``formats``; ``Decimal``;
    ``int``; ``bool`` (1/0, true/false, y/n, 是/否); ``tuple[str, ...]`` from a comma- or
    semicolon-separated cell; ``Literal`` fields must hold one of their literals. The
    field's value map (stored code → value) applies first, so a site's codes become record
    values before they are checked. Blank cells take the field's default; a blank required
    field, or a value that does not convert, raises :class:`InvalidInput` naming the field
    and the value's shape, never the value.
    """
    values, formats = values or {}, formats or {}
    kwargs: dict[str, Any] = {}
    for spec in _field_specs(cls):
        raw = fields.get(spec.name)
        if isinstance(raw, bytes):            # BLOB content (documents) passes through
            if raw:
                kwargs[spec.name] = raw
            elif spec.required:
                raise InvalidInput(f"field '{spec.name}' is blank", code="blank")
            continue
        text = _text(raw)
        if text is None:
            if spec.required:
                raise InvalidInput(f"field '{spec.name}' is blank", code="blank")
            continue
        text = values.get(spec.name, {}).get(text, text)
        kwargs[spec.name] = spec.convert(text, spec.name, formats)
    return cls(**kwargs)


@functools.cache
def _field_specs(cls: type) -> tuple[_FieldSpec, ...]:
    hints = get_type_hints(cls)
    return tuple(
        _FieldSpec(f.name, f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING, _converter(hints[f.name]))
        for f in dataclasses.fields(cls))


def _converter(hint: Any) -> Callable[[str, str, Formats], Any]:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if str in args or bytes in args:
            return _as_str               # str | None, bytes | str: text as read
        if len(args) == 1:
            return _converter(args[0])
        raise TypeError(f"record field type {hint} has no converter")
    if origin is Literal:
        return functools.partial(_as_literal, frozenset(get_args(hint)))
    if origin is tuple:
        return _as_tuple
    converters: dict[Any, Callable[[str, str, Formats], Any]] = {
        str: _as_str, dt.datetime: _as_datetime, dt.date: _as_date, Decimal: _as_decimal,
        int: _as_int, bool: _as_bool}
    if hint not in converters:
        raise TypeError(f"record field type {hint} has no converter")
    return converters[hint]


def _as_str(text: str, name: str, formats: Formats) -> str:
    return text


def _as_literal(allowed: frozenset[str], text: str, name: str, formats: Formats) -> str:
    if text not in allowed:
        raise InvalidInput(f"field '{name}' code is not in the mapping", code="unmapped")
    return text


def _as_tuple(text: str, name: str, formats: Formats) -> tuple[str, ...]:
    return tuple(p.strip() for p in _LIST_SEPARATORS.split(text) if p.strip())


def _as_datetime(text: str, name: str, formats: Formats) -> dt.datetime:
    return parse_datetime(text, formats=formats.get(name, ()), what=f"field '{name}'")


def _as_date(text: str, name: str, formats: Formats) -> dt.date:
    return parse_date(text, formats=formats.get(name, ()), what=f"field '{name}'")


def _as_decimal(text: str, name: str, formats: Formats) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise InvalidInput(f"field '{name}' value '{value_shape(text)}' is not a decimal number",
                           code="bad-number")
    return number


def _as_int(text: str, name: str, formats: Formats) -> int:
    number = _as_decimal(text, name, formats)
    if number != number.to_integral_value():
        raise InvalidInput(f"field '{name}' value '{value_shape(text)}' is not a whole number",
                           code="bad-number")
    return int(number)


def _as_bool(text: str, name: str, formats: Formats) -> bool:
    folded = text.lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise InvalidInput(f"field '{name}' value '{value_shape(text)}' is not a yes/no value",
                       code="bad-boolean")
