"""Plain domain records that flow between a site adapter, the FHIR mapping and the node server.

Adapters turn each vendor's rows into these records (already normalised: ISO dates,
FHIR gender codes, resident IDs as read); the mapping turns them into FHIR. Nothing here
imports gRPC, SQL or HTTP.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Gender", "PatientQuery", "PatientRecord", "EncounterRecord"]

Gender = Literal["male", "female", "other", "unknown"]


@dataclass(frozen=True, slots=True)
class PatientQuery:
    """Demographic search at one site (PDQm-style: every given criterion must match).

    ``name`` matches the full name or any part of it after normalisation (whitespace and
    case folded); ``identifier`` is a resident ID (15 or 18 digits) or a local patient id;
    ``phone`` is compared digits-only without a +86 prefix.
    """

    name: str | None = None
    family: str | None = None
    given: str | None = None
    birth_date: dt.date | None = None
    gender: Gender | None = None
    identifier: str | None = None
    phone: str | None = None
    limit: int = 50

    def is_empty(self) -> bool:
        return not any(
            (self.name, self.family, self.given, self.birth_date, self.gender,
             self.identifier, self.phone)
        )


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """One patient as a site's system knows them, normalised but not yet FHIR."""

    local_id: str
    name: str
    family: str | None = None
    given: str | None = None
    gender: Gender = "unknown"
    birth_date: dt.date | None = None
    resident_id: str | None = None
    phone: str | None = None
    address: str | None = None
    updated_at: dt.datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EncounterRecord:
    """One visit (outpatient, inpatient, emergency) at a site."""

    local_id: str
    patient_local_id: str
    kind: Literal["outpatient", "inpatient", "emergency"]
    start: dt.datetime
    end: dt.datetime | None = None
    department: str | None = None
    diagnosis_text: str | None = None
    diagnosis_code: str | None = None
    status: Literal["planned", "in-progress", "finished", "cancelled"] = "finished"
