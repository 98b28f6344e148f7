"""Evaluate a parsed archive search over one person's gathered resources.

The parameters' FHIRPath expressions are those of the R4 search parameter registry
(http://hl7.org/fhir/R4/searchparameter-registry.html), for the elements our nodes emit:

====================  ==========================================  ======================
resource              ``date``                                    ``code`` / ``category``
====================  ==========================================  ======================
Observation           effectiveDateTime | effectivePeriod | issued  code / category
Condition             (none)                                      code / category
MedicationRequest     authoredOn                                  —
Encounter             period                                      —
DiagnosticReport      effectiveDateTime | effectivePeriod | issued  code / category
DocumentReference     date                                        —
====================  ==========================================  ======================

``_sort=date`` / ``-date`` orders by the same date (resources without one last); without
``_sort`` the order is the archive's (site, then feed order).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from federation.archive.record import SourcedResource
from federation.archive.search_params import SearchQuery, date_range

__all__ = ["date_of", "matches", "run_search"]

_FAR_PAST = dt.datetime(1, 1, 2, tzinfo=dt.UTC)


def date_of(resource_type: str, data: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    """The range of the resource's ``date`` search parameter, or None."""
    if resource_type in ("Observation", "DiagnosticReport"):
        text = data.get("effectiveDateTime") or (data.get("effectivePeriod") or {}).get(
            "start") or data.get("issued")
    elif resource_type == "MedicationRequest":
        text = data.get("authoredOn")
    elif resource_type == "Encounter":
        period = data.get("period") or {}
        start, end = date_range(period.get("start") or ""), date_range(period.get("end") or "")
        if start is None:
            return None
        return start[0], (end[1] if end else start[1])
    elif resource_type in ("DocumentReference",):
        text = data.get("date")
    elif resource_type == "Condition":
        text = data.get("onsetDateTime") or data.get("recordedDate")
    elif resource_type == "AllergyIntolerance":
        text = data.get("recordedDate")
    else:
        text = None
    return date_range(text) if isinstance(text, str) else None


def _codings(concepts: Iterable[Any]) -> list[tuple[str | None, str | None]]:
    out = []
    for concept in concepts:
        if isinstance(concept, dict):
            out += [(c.get("system"), c.get("code")) for c in concept.get("coding") or []
                    if isinstance(c, dict)]
    return out


def matches(query: SearchQuery, data: dict[str, Any]) -> bool:
    for ors in query.codes:
        codings = _codings([data.get("code")])
        if not any(t.matches(codings) for t in ors):
            return False
    for ors in query.categories:
        codings = _codings(data.get("category") or [])
        if not any(t.matches(codings) for t in ors):
            return False
    if query.dates:
        when = date_of(query.resource_type, data)
        if when is None or not all(d.matches(*when) for d in query.dates):
            return False
    return True


def run_search(query: SearchQuery, items: Sequence[SourcedResource]) -> list[SourcedResource]:
    """Every matching resource of the query's type, sorted as asked (paging is the
    Bundle's)."""
    found = [i for i in items if i.resource_type == query.resource_type and matches(query, i.data)]
    if query.sort_desc is not None:
        def key(item: SourcedResource) -> tuple[int, dt.datetime]:
            when = date_of(item.resource_type, item.data)
            return (1, when[0]) if when else (0, _FAR_PAST)
        dated = [i for i in found if date_of(i.resource_type, i.data)]
        undated = [i for i in found if not date_of(i.resource_type, i.data)]
        dated.sort(key=key, reverse=query.sort_desc)
        found = dated + undated
    return found
