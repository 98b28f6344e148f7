"""A HIS database read through a declarative per-vendor mapping (TOML), read-only.

The mapping names the tables, maps columns to record fields, stored codes to record
values and lists the vendor's date formats — adding a vendor is a TOML file, not Python
(see ``federation/nodes/mappings/vendor_a.toml`` for the shape). Queries are SQLAlchemy
Core with bound parameters; identifier and birth-date criteria go to SQL, the rest of
PDQm matching (folded names, phones) finishes in Python. SQLite is opened with
``mode=ro`` and ``PRAGMA query_only``: the node never writes a site's clinical system.
"""

from __future__ import annotations

import re
import sqlite3
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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
)
from federation.nodes.adapters.normalise import (
    legacy_resident_id,
    normalise_resident_id,
    resident_id_key,
)
from federation.nodes.model import EncounterRecord, PatientQuery, PatientRecord

__all__ = ["MAPPINGS_DIR", "SqlAdapter", "TableMapping", "VendorMapping", "load_mapping"]

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"

_PATIENT_FIELDS = frozenset(("local_id", "name", "family", "given", "gender", "birth_date",
                             "resident_id", "phone", "address", "updated_at"))
_ENCOUNTER_FIELDS = frozenset(("local_id", "patient_local_id", "kind", "start", "end",
                               "department", "diagnosis_text", "diagnosis_code", "status"))
_REQUIRED = {"patients": ("local_id", "name"),
             "encounters": ("local_id", "patient_local_id", "kind", "start")}


@dataclass(frozen=True, slots=True)
class TableMapping:
    table: str
    columns: Mapping[str, str]               # record field → vendor column
    values: Mapping[str, Mapping[str, str]]  # record field → {stored code → value}
    formats: Mapping[str, tuple[str, ...]]   # record field → strptime formats


@dataclass(frozen=True, slots=True)
class VendorMapping:
    vendor: str
    source: Path
    patients: TableMapping
    encounters: TableMapping


def load_mapping(ref: str | Path) -> VendorMapping:
    """A packaged mapping by name ('vendor_a') or a TOML file by path; ConfigError names
    the file and key when it is malformed."""
    path = Path(ref)
    if isinstance(ref, str) and re.fullmatch(r"[A-Za-z0-9_\-]+", ref):
        path = MAPPINGS_DIR / f"{ref}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in MAPPINGS_DIR.glob("*.toml"))
            raise ConfigError(f"unknown SQL mapping '{ref}'; packaged mappings: {known}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read SQL mapping {path}: {exc}") from exc
    return VendorMapping(
        vendor=str(data.get("vendor", path.stem)),
        source=path,
        patients=_table_mapping(data, "patients", _PATIENT_FIELDS, path),
        encounters=_table_mapping(data, "encounters", _ENCOUNTER_FIELDS, path),
    )


def _table_mapping(data: Mapping[str, Any], section: str, fields: frozenset[str],
                   path: Path) -> TableMapping:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"SQL mapping {path}: '{section}.{key}' {problem}")

    raw = data.get(section)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("table"), str):
        raise fail("table", "is missing")
    columns = raw.get("columns", {})
    for key in columns:
        if key not in fields:
            raise fail(f"columns.{key}", f"is not a record field (known: {sorted(fields)})")
    for key in _REQUIRED[section]:
        if not isinstance(columns.get(key), str):
            raise fail(f"columns.{key}", "is required")
    values = {k: {str(code): str(v) for code, v in m.items()}
              for k, m in raw.get("values", {}).items()}
    formats = {}
    for key, given in raw.get("formats", {}).items():
        fmts = [given] if isinstance(given, str) else given
        if not isinstance(fmts, list) or not all(isinstance(f, str) for f in fmts):
            raise fail(f"formats.{key}", "must be a format string or a list of them")
        formats[key] = tuple(fmts)
    return TableMapping(raw["table"], dict(columns), values, formats)


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

    def _table(self, tm: TableMapping) -> TableClause:
        """The table as mapped, after checking that the database has it and its columns."""
        try:
            present = {c["name"] for c in inspect(self._engine).get_columns(tm.table)}
        except NoSuchTableError:
            raise SourceError(f"{self.path} has no table '{tm.table}' that mapping "
                              f"{self.mapping.vendor} expects") from None
        except SQLAlchemyError as exc:
            raise SourceError(f"cannot read table '{tm.table}' in {self.path} "
                              f"(mapping {self.mapping.vendor}): {type(exc).__name__}") from exc
        missing = sorted(set(tm.columns.values()) - present)
        if not present or missing:
            raise SourceError(f"table '{tm.table}' in {self.path} lacks columns {missing} "
                              f"that mapping {self.mapping.vendor} expects")
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
        prepared = PreparedQuery(query)
        stmt = self._select(self._p, self.mapping.patients)
        for condition in self._pushdown(query):
            stmt = stmt.where(condition)
        stmt = stmt.order_by(self._p.c[self.mapping.patients.columns["local_id"]])
        found: list[PatientRecord] = []
        with self._rows(stmt) as rows:
            for row in rows:
                rec = self._patient(row)
                if rec is not None and prepared.matches(rec):
                    found.append(rec)
                    if len(found) >= query.limit:
                        break
        return found

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
