"""De-identification of archive resources for research export (科研赋能).

What it does to every resource, in the spirit of the HIPAA Safe Harbor list and ISO/TS
25237 pseudonymisation (and GB/T 37964-2019, 个人信息去标识化指南):

* **direct identifiers removed**: ``identifier`` (every one: MRNs, resident IDs, visit
  numbers, accession numbers), ``name``, ``telecom``, ``address``, ``photo``,
  ``contact``, ``communication``, ``generalPractitioner``, ``managingOrganization``,
  ``link``; ``meta`` is reduced to ``source`` (the site: needed for per-site cohorts);
* **free text dropped**: narrative ``text``, CodeableConcept ``text`` and every
  ``display`` (a Reference display may hold a name), ``note``, ``description``, ``valueString``, ``comment``,
  ``conclusion``, dosage text, and DocumentReference attachments (their content *is* free
  text) — a CodeableConcept left with no coding is removed;
* **ids pseudonymised**: the Patient becomes ``HMAC(key, person)`` and every other
  resource ``HMAC(key, site/type/id)``; references are rewritten the same way, so the
  export stays internally linked (a person's records across sites share one pseudonym);
* **dates shifted per person**: every date, dateTime and instant moves by the same whole
  number of days for one person — a keyed pseudorandom offset in
  ±:data:`MAX_SHIFT_DAYS` (never 0) from ``HMAC(key, person)`` — so intervals within a
  person are exact and calendar dates are not. Years-only dates (``birthDate`` = YYYY)
  shift by the year the offset lands in.

The key never leaves the gateway; without it pseudonyms cannot be linked back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from typing import Any

__all__ = ["MAX_SHIFT_DAYS", "Deidentifier"]

MAX_SHIFT_DAYS = 365
_REMOVE = frozenset({"identifier", "name", "telecom", "address", "photo", "contact",
                     "communication", "generalPractitioner", "managingOrganization", "link",
                     "text", "note", "description", "valueString", "comment", "conclusion",
                     "content", "presentedForm", "performer", "requester", "recorder",
                     "asserter", "author", "participant", "serviceProvider", "location",
                     "maritalStatus", "extension", "modifierExtension", "title"})
_DATE = re.compile(r"^(\d{4})(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?$")


class Deidentifier:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the de-identification key must be at least 16 bytes")
        self._key = key

    def _mac(self, text: str) -> bytes:
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()

    def pseudonym(self, text: str) -> str:
        return self._mac(text).hex()[:32]

    def shift_days(self, person_id: str) -> int:
        """The person's date offset: the same for every resource of theirs, never 0."""
        n = int.from_bytes(self._mac("shift:" + person_id)[:4], "big")
        days = n % (2 * MAX_SHIFT_DAYS) - MAX_SHIFT_DAYS
        return days if days != 0 else MAX_SHIFT_DAYS

    def resource(self, site_id: str, data: dict[str, Any], person_id: str,
                 patient_ids: set[str]) -> dict[str, Any]:
        """A de-identified copy of one resource of ``person_id`` reported by ``site_id``
        (``patient_ids``: the person's site Patient ids, all mapped to one pseudonym)."""
        rtype = data["resourceType"]
        shift = dt.timedelta(days=self.shift_days(person_id))
        person_pseudonym = self.pseudonym("person:" + person_id)

        def ref(reference: str) -> str:
            kind, _, rid = reference.partition("/")
            if kind == "Patient" and rid in patient_ids:
                return f"Patient/{person_pseudonym}"
            return f"{kind}/{self.pseudonym(f'{site_id}/{kind}/{rid}')}"

        out = _clean(data, shift, ref)
        out["resourceType"] = rtype
        out["id"] = person_pseudonym if rtype == "Patient" else self.pseudonym(
            f"{site_id}/{rtype}/{data.get('id', '')}")
        out["meta"] = {"source": (data.get("meta") or {}).get("source", "")}
        return out


def _clean(value: Any, shift: dt.timedelta, ref: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in _REMOVE or k in ("meta", "id", "resourceType", "display"):
                continue
            if k == "reference" and isinstance(v, str):
                if "/" in v and not v.startswith(("urn:", "http")):
                    out[k] = ref(v)
                continue
            cleaned = _clean(v, shift, ref, k)
            if cleaned in (None, {}, []):
                continue
            out[k] = cleaned
        if "coding" in value and "coding" not in out:
            return None  # a CodeableConcept that was only free text
        return out
    if isinstance(value, list):
        items = [_clean(v, shift, ref, key) for v in value]
        return [i for i in items if i not in (None, {}, [])]
    if isinstance(value, str):
        return _shift(value, shift) if _DATE.match(value) and (
            "-" in value or key in ("birthDate", "deceasedDateTime")) else value
    return value


def _shift(text: str, shift: dt.timedelta) -> str | None:
    m = _DATE.match(text)
    assert m is not None
    if m.group(2) is None:                    # YYYY: shift the year the offset lands in
        moved = dt.date(int(m.group(1)), 7, 1) + shift
        return f"{moved.year:04d}"
    if m.group(3) is None:                    # YYYY-MM
        moved = dt.date(int(text[:4]), int(text[5:7]), 15) + shift
        return f"{moved.year:04d}-{moved.month:02d}"
    try:
        day = dt.date.fromisoformat(text[:10]) + shift
    except ValueError:
        return None                           # not a real date: dropped, never kept as is
    return day.isoformat() + text[10:]
