"""A HIS database read through a declarative per-vendor mapping (TOML), read-only.

The mapping names the tables, maps columns to record fields, stored codes to record
values and lists the vendor's date formats — adding a vendor is a TOML file, not Python
(see ``federation/nodes/mappings/vendor_a.toml`` for the shape). Queries are SQLAlchemy
Core with bound parameters; identifier and birth-date criteria go to SQL, the rest of
PDQm matching (folded names, phones) finishes in Python. SQLite is opened with
``mode=ro`` and ``PRAGMA query_only``: the node never writes a site's clinical system.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    ColumnElement,
    Engine,
    Result,
    Row,
    TableClause,
    column,
    create_engine,
    func,
    inspect,
    or_,
    select,
    table,
)
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from federation.errors import ConfigError, InvalidInput, SourceError
from federation.nodes.adapters.base import (
    PreparedQuery,
    SourceAdapter,
    encounter_from_fields,
    patient_from_fields,
    record_fields,
    record_from_fields,
)
from federation.nodes.adapters.normalise import (
    legacy_resident_id,
    normalise_resident_id,
    resident_id_key,
)
from federation.nodes.model import (
    AllergyRecord,
    ClinicalRecord,
    ConditionRecord,
    DocumentRecord,
    EncounterRecord,
    ImagingStudyRecord,
    LabReportRecord,
    LabResultRecord,
    MedicationRecord,
    PatientQuery,
    PatientRecord,
    VitalSignRecord,
)

__all__ = ["CLINICAL_SECTIONS", "MAPPINGS_DIR", "SqlAdapter", "TableMapping", "VendorMapping",
           "load_mapping"]

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"

_PATIENT_FIELDS = frozenset(("local_id", "name", "family", "given", "gender", "birth_date",
                             "resident_id", "phone", "address", "updated_at"))
_ENCOUNTER_FIELDS = frozenset(("local_id", "patient_local_id", "kind", "start", "end",
                               "department", "diagnosis_text", "diagnosis_code", "status"))
_REQUIRED = {"patients": ("local_id", "name"),
             "encounters": ("local_id", "patient_local_id", "kind", "start")}
#: optional clinical sections, in the order :meth:`SqlAdapter.clinical` returns them
CLINICAL_SECTIONS: dict[str, type] = {
    "conditions": ConditionRecord, "lab_reports": LabReportRecord,
    "lab_results": LabResultRecord, "vital_signs": VitalSignRecord,
    "imaging_studies": ImagingStudyRecord, "medications": MedicationRecord,
    "allergies": AllergyRecord, "documents": DocumentRecord}
#: per record class, the field that orders a patient's records in time
_TIME_FIELD = {ConditionRecord: "recorded", LabReportRecord: "issued",
               LabResultRecord: "effective", VitalSignRecord: "effective",
               ImagingStudyRecord: "started", MedicationRecord: "authored",
               AllergyRecord: "recorded", DocumentRecord: "created"}
_HEADER = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9_\-]+)\s*=')


@dataclass(frozen=True, slots=True)
class TableMapping:
    table: str
    columns: Mapping[str, str]               # record field → vendor column
    values: Mapping[str, Mapping[str, str]]  # record field → {stored code → value}
    formats: Mapping[str, tuple[str, ...]]   # record field → strptime formats
    section: str = ""                        # 'patients', 'lab_results', ...
    #: where each setting is in the mapping file: 'table' or 'columns.<field>' → line
    lines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VendorMapping:
    vendor: str
    source: Path
    patients: TableMapping
    encounters: TableMapping
    #: clinical section name → its table, only the sections the file maps
    clinical: Mapping[str, TableMapping] = field(default_factory=dict)

    def where(self, tm: TableMapping, key: str) -> str:
        """'vendor_a.toml line 23' for a setting, for messages that send users to it."""
        line = tm.lines.get(key)
        return f"{self.source.name} line {line}" if line else f"{self.source.name}"


def load_mapping(ref: str | Path) -> VendorMapping:
    """A packaged mapping by name ('vendor_a') or a TOML file by path; ConfigError names
    the file and line when it is malformed."""
    path = Path(ref)
    if isinstance(ref, str) and re.fullmatch(r"[A-Za-z0-9_\-]+", ref):
        path = MAPPINGS_DIR / f"{ref}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in MAPPINGS_DIR.glob("*.toml"))
            raise ConfigError(f"unknown SQL mapping '{ref}'; packaged mappings: {known}")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read SQL mapping {path}: {exc}") from exc
    lines = _key_lines(text)
    known = set(_REQUIRED) | set(CLINICAL_SECTIONS)
    for section, value in data.items():
        if isinstance(value, Mapping) and section not in known:
            raise ConfigError(f"{path.name} line {lines.get((section, ''), '?')}: section "
                              f"[{section}] is not a known table (known: {sorted(known)}) "
                              f"(mapping {path})")
    clinical = {section: _table_mapping(data, section, frozenset(record_fields(cls)),
                                        tuple(f for f, req in record_fields(cls).items()
                                              if req), path, lines)
                for section, cls in CLINICAL_SECTIONS.items() if section in data}
    return VendorMapping(
        vendor=str(data.get("vendor", path.stem)),
        source=path,
        patients=_table_mapping(data, "patients", _PATIENT_FIELDS, _REQUIRED["patients"],
                                path, lines),
        encounters=_table_mapping(data, "encounters", _ENCOUNTER_FIELDS,
                                  _REQUIRED["encounters"], path, lines),
        clinical=clinical,
    )


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(table header, key) → 1-based line of each ``key = ...`` in a TOML text, and
    (header, '') → the header's own line. tomllib keeps no positions, and a mapping error
    is only useful when it says where to look; mapping files use plain tables and
    one-line values, which is all this scan understands."""
    found: dict[tuple[str, str], int] = {}
    header = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        if m := _HEADER.match(line):
            header = ".".join(p.strip().strip('"') for p in m[1].split("."))
            found.setdefault((header, ""), number)
        elif m := _KEY.match(line):
            found.setdefault((header, m[1].strip('"')), number)
    return found


def _table_mapping(data: Mapping[str, Any], section: str, fields: frozenset[str],
                   required: tuple[str, ...], path: Path,
                   key_lines: Mapping[tuple[str, str], int]) -> TableMapping:
    lines = {"table": key_lines.get((section, "table"), key_lines.get((section, ""), 0))}

    def fail(where: tuple[str, str], key: str, problem: str) -> ConfigError:
        line = key_lines.get(where) or key_lines.get((where[0], "")) or \
            key_lines.get((section, ""))
        at = f"{path.name} line {line}" if line else path.name
        return ConfigError(f"{at}: '{section}.{key}' {problem} (mapping {path})")

    raw = data.get(section)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("table"), str):
        raise fail((section, "table"), "table", "is missing")
    columns = raw.get("columns", {})
    for key, col in columns.items():
        lines[f"columns.{key}"] = key_lines.get((f"{section}.columns", key), 0)
        if key not in fields:
            raise fail((f"{section}.columns", key), f"columns.{key}",
                       f"is not a record field (known: {sorted(fields)})")
        if not isinstance(col, str):
            raise fail((f"{section}.columns", key), f"columns.{key}",
                       "must be a column name")
    for key in required:
        if not isinstance(columns.get(key), str):
            raise fail((f"{section}.columns", ""), f"columns.{key}", "is required")
    values = {}
    for key, m in raw.get("values", {}).items():
        if key not in fields:
            raise fail((f"{section}.values.{key}", ""), f"values.{key}",
                       "is not a record field")
        values[key] = {str(code): str(v) for code, v in m.items()}
    formats = {}
    for key, given in raw.get("formats", {}).items():
        fmts = [given] if isinstance(given, str) else given
        if key not in fields:
            raise fail((f"{section}.formats", key), f"formats.{key}", "is not a record field")
        if not isinstance(fmts, list) or not all(isinstance(f, str) for f in fmts):
            raise fail((f"{section}.formats", key), f"formats.{key}",
                       "must be a format string or a list of them")
        formats[key] = tuple(fmts)
    return TableMapping(raw["table"], dict(columns), values, formats, section, lines)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True,
                           check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


class SqlAdapter(SourceAdapter):
    """A vendor HIS database (SQLite file) through a :class:`VendorMapping`."""

    def __init__(self, path: Path, mapping: VendorMapping) -> None:
        super().__init__()
        path = Path(path).resolve()
        if not path.is_file():
            raise SourceError(f"SQL source {path} does not exist or is not a file")
        self.path, self.mapping = path, mapping
        # a file database behind a creator: say which pool, or SQLAlchemy assumes :memory:
        self._engine: Engine = create_engine(
            "sqlite://", creator=partial(_connect_read_only, path), poolclass=QueuePool)
        self._p = self._table(mapping.patients)
        self._e = self._table(mapping.encounters)
        self._clinical = {section: (tm, self._table(tm))
                          for section, tm in mapping.clinical.items()}

    def _table(self, tm: TableMapping) -> TableClause:
        """The table as mapped, after checking that the database has it and its columns;
        SourceError names the mapping file and line of the first setting that is wrong."""
        try:
            present = {c["name"] for c in inspect(self._engine).get_columns(tm.table)}
        except NoSuchTableError:
            present = set()
        except SQLAlchemyError as exc:
            raise SourceError(f"cannot read table '{tm.table}' in {self.path} "
                              f"(mapping {self.mapping.vendor}): {type(exc).__name__}") from exc
        if not present:
            raise SourceError(f"{self.mapping.where(tm, 'table')}: [{tm.section}] table = "
                              f'"{tm.table}": {self.path} has no table \'{tm.table}\' '
                              f"that mapping {self.mapping.vendor} expects")
        for name, col in tm.columns.items():
            if col not in present:
                raise SourceError(
                    f"{self.mapping.where(tm, f'columns.{name}')}: [{tm.section}.columns] "
                    f'{name} = "{col}": table {tm.table} has no column {col} ({self.path})')
        return table(tm.table, *(column(c) for c in tm.columns.values()))

    # ----------------------------------------------------------------- reading

    @contextmanager
    def _rows(self, stmt: Any) -> Iterator[Result[Any]]:
        """Rows of one statement on a pooled read-only connection, released on exit."""
        try:
            with self._engine.connect() as conn:
                yield conn.execute(stmt)
        except SQLAlchemyError as exc:
            raise SourceError(f"reading {self.path} failed: {type(exc).__name__}") from exc

    def _select(self, t: TableClause, tm: TableMapping) -> Any:
        return select(*(t.c[c].label(f) for f, c in tm.columns.items()))

    def _patient(self, row: Row[Any]) -> PatientRecord | None:
        tm = self.mapping.patients
        fields = row._asdict()
        try:
            return patient_from_fields(fields, values=tm.values, formats=tm.formats)
        except InvalidInput as exc:
            self._quarantine(str(fields.get("local_id")), exc.message)
            return None

    def search_patients(self, query: PatientQuery) -> list[PatientRecord]:
        if query.limit <= 0:
            return []
        stmt = self._select(self._p, self.mapping.patients)
        for condition in self._pushdown(query):
            stmt = stmt.where(condition)
        stmt = stmt.order_by(self._p.c[self.mapping.patients.columns["local_id"]])
        with self._rows(stmt) as rows:
            return PreparedQuery(query).first_matches(self._patient(row) for row in rows)

    def _pushdown(self, query: PatientQuery) -> list[ColumnElement[bool]]:
        """Index-friendly pre-filters; Python matching has the last word.

        They assume what vendor HIS input screens enforce: IDs stored without separators
        (in any case, 15 or 18 digits) and birth dates in the mapping's first format.
        """
        cols, conditions = self.mapping.patients.columns, []
        if query.identifier:
            raw = query.identifier.strip()
            either = [self._p.c[cols["local_id"]] == raw]
            if "resident_id" in cols:
                either.append(self._p.c[cols["resident_id"]].in_(_id_spellings(raw)))
            conditions.append(or_(*either))
        fmts = self.mapping.patients.formats.get("birth_date")
        if query.birth_date is not None and "birth_date" in cols and fmts:
            conditions.append(
                self._p.c[cols["birth_date"]] == query.birth_date.strftime(fmts[0]))
        return conditions

    def get_patient(self, local_id: str) -> PatientRecord | None:
        local = self._p.c[self.mapping.patients.columns["local_id"]]
        stmt = self._select(self._p, self.mapping.patients).where(local == local_id)
        with self._rows(stmt) as rows:
            row = rows.first()
        return self._patient(row) if row is not None else None

    def encounters(self, patient_local_id: str) -> list[EncounterRecord]:
        tm = self.mapping.encounters
        stmt = (self._select(self._e, tm)
                .where(self._e.c[tm.columns["patient_local_id"]] == patient_local_id)
                .order_by(self._e.c[tm.columns["local_id"]]))
        visits = []
        with self._rows(stmt) as rows:
            fetched = rows.all()
        for row in fetched:
            fields = row._asdict()
            try:
                visits.append(encounter_from_fields(fields, values=tm.values,
                                                    formats=tm.formats))
            except InvalidInput as exc:
                self._quarantine(f"visit:{fields.get('local_id')}", exc.message)
        return sorted(visits, key=lambda v: (v.start, v.local_id))

    def clinical(self, patient_local_id: str) -> list[ClinicalRecord]:
        """Every mapped clinical table's rows for the patient, by section (in
        :data:`CLINICAL_SECTIONS` order), then time, then local id.

        A lab report whose mapping has no ``result_local_ids`` column lists the results
        whose ``report_local_id`` names it (vendors keep that link on the result row).
        """
        found: dict[str, list[Any]] = {}
        for section, (tm, t) in self._clinical.items():
            found[section] = self._clinical_rows(section, tm, t, patient_local_id)
        reports = self.mapping.clinical.get("lab_reports")
        if reports is not None and "result_local_ids" not in reports.columns:
            by_report: dict[str, list[str]] = {}
            for result in found.get("lab_results", ()):
                if result.report_local_id is not None:
                    by_report.setdefault(result.report_local_id, []).append(result.local_id)
            found["lab_reports"] = [replace(r, result_local_ids=tuple(by_report[r.local_id]))
                                    if r.local_id in by_report else r
                                    for r in found["lab_reports"]]
        return [rec for records in found.values() for rec in records]

    def _clinical_rows(self, section: str, tm: TableMapping, t: TableClause,
                       patient_local_id: str) -> list[Any]:
        cls = CLINICAL_SECTIONS[section]
        stmt = (self._select(t, tm)
                .where(t.c[tm.columns["patient_local_id"]] == patient_local_id)
                .order_by(t.c[tm.columns["local_id"]]))
        with self._rows(stmt) as rows:
            fetched = rows.all()
        records = []
        for row in fetched:
            fields = row._asdict()
            try:
                records.append(record_from_fields(cls, fields, values=tm.values,
                                                  formats=tm.formats))
            except InvalidInput as exc:
                self._quarantine(f"{section}:{fields.get('local_id')}", exc.message)
        when = _TIME_FIELD[cls]
        return sorted(records, key=lambda r: (_sort_time(getattr(r, when)), r.local_id))

    def source_stamp(self) -> object:
        """The database file and its WAL: any committed write changes one of them."""
        stamp = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = path.stat()
                stamp.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                stamp.append((0, -1))
        return tuple(stamp)

    def count_patients(self) -> int:
        with self._rows(select(func.count()).select_from(self._p)) as rows:
            return int(rows.scalar_one())

    def iter_patient_ids(self) -> Iterator[str]:
        local = self._p.c[self.mapping.patients.columns["local_id"]]
        with self._rows(select(local).order_by(local)) as rows:
            ids = [str(value) for value in rows.scalars()]
        yield from ids

    def close(self) -> None:
        self._engine.dispose()


def _sort_time(value: dt.date | dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.min
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time())


def _id_spellings(raw: str) -> list[str]:
    """How a site may have stored the ID the caller typed: as typed, cleaned, 18-digit,
    lower-case check 'x', and the 15-digit legacy form."""
    spellings = {raw, normalise_resident_id(raw) or raw}
    key = resident_id_key(raw)
    if key:
        spellings |= {key, key.lower()}
        legacy = legacy_resident_id(key)
        if legacy:
            spellings.add(legacy)
    return sorted(spellings)
