"""The same resource reported by two sites, shown once.

A patient's lab result may reach the archive twice: from the lab that ran it and from the
hospital that ordered it (their HIS imports the LIS report); an imaging study from the
PACS and from the referring site. Two resources are **the same** when they are of the
same type and either

1. they share a *business identifier* that is not site-scoped — an
   ``Identifier.system`` that is not under ``urn:federation:site:`` (a DICOM Study
   Instance UID ``urn:dicom:uid``, a national accession number …): such an identifier
   names the real-world thing, whoever reports it; or
2. their *clinical content is identical*: the SHA-256 of their canonical JSON (sorted
   keys, no whitespace) after removing what differs by the reporting site only — ``id``,
   ``meta``, ``text`` (narrative), site-scoped identifiers, and every ``reference``
   string (ids of the site's own Patient/Encounter). Codes, values, units, dates,
   statuses and displays all count: a result re-measured a minute later, or amended, is
   a different resource.

Patients are never merged here (each site record stays visible; the EMPI links them).
The first occurrence is kept (callers order by site, then feed order); the kept resource
lists the other reporting sites in ``meta.tag`` (system :data:`ALSO_REPORTED_BY`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from federation.fhir_systems import SITE_URN_PREFIX

__all__ = ["ALSO_REPORTED_BY", "content_digest", "deduplicate", "identity_keys", "keys_text"]

ALSO_REPORTED_BY = "urn:federation:archive:also-reported-by"
_DROP = frozenset({"id", "meta", "text"})


class _Item(Protocol):
    site_id: str
    resource_type: str

    @property
    def keys(self) -> frozenset[str]: ...


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                continue
            if key == "identifier":
                item = [i for i in (item if isinstance(item, list) else [item])
                        if isinstance(i, dict)
                        and not str(i.get("system", "")).startswith(SITE_URN_PREFIX)]
                if not item:
                    continue
            out[key] = _strip(item)
        return out
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def content_digest(resource: dict[str, Any]) -> str:
    """SHA-256 of the resource's clinical content (see the module docstring)."""
    body = {k: v for k, v in resource.items() if k not in _DROP}
    canonical = orjson.dumps(_strip(body), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def identity_keys(resource_type: str, resource: dict[str, Any]) -> frozenset[str]:
    """Every key under which this resource is 'the same' as another (rule 1 and 2);
    Patients have none (never merged here)."""
    if resource_type == "Patient":
        return frozenset()
    keys = {f"digest {resource_type} {content_digest(resource)}"}
    for ident in resource.get("identifier") or []:
        system, value = ident.get("system"), ident.get("value")
        if system and value and not system.startswith(SITE_URN_PREFIX):
            keys.add(f"id {resource_type} {system}|{value}")
    return frozenset(keys)


def keys_text(keys: frozenset[str]) -> str:
    """How the archive stores a resource's keys (``site_resource.dedup_keys``)."""
    return "\n".join(sorted(keys))


def deduplicate(items: Sequence[_Item]) -> tuple[list[int], dict[int, list[str]]]:
    """Indexes of the items to keep (in order) and, per kept index, the other sites that
    reported the same resource."""
    seen: dict[str, int] = {}
    kept: list[int] = []
    also: dict[int, list[str]] = {}
    for i, item in enumerate(items):
        if item.resource_type == "Patient":
            kept.append(i)
            continue
        keys = item.keys
        first = next((seen[k] for k in keys if k in seen), None)
        if first is None:
            kept.append(i)
            for k in keys:
                seen[k] = i
            continue
        for k in keys:
            seen.setdefault(k, first)
        if item.site_id != items[first].site_id and item.site_id not in also.get(first, []):
            also.setdefault(first, []).append(item.site_id)
    return kept, also
