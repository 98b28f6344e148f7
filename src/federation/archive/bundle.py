"""A person's record as FHIR: searchset Bundles with provenance per entry, and paging.

Each entry's resource says where it came from and how fresh it is (FHIR R4 §2.26.0
Meta): ``meta.source`` = the reporting site (``urn:federation:site:<id>``) and
``meta.lastUpdated`` = when the gateway last had this version from that site (stored
from the change feed, or fetched live); the site's own ``lastUpdated`` moves to
``meta.tag`` (system :data:`SITE_LAST_UPDATED`) so nothing is lost. Sites that reported
the same resource too are ``meta.tag`` codes of system
:data:`~federation.archive.dedup.ALSO_REPORTED_BY`.

Paging (FHIR R4 §3.1.1.5.7 / Bundle.link): ``_count`` entries per page from ``_offset``;
``self``, ``next`` and ``previous`` links carry the same parameters. Problems (a
federated site that did not answer, records withheld by consent) are OperationOutcome
entries with ``search.mode = outcome`` (§3.1.1.4) on every page, first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from federation.archive.dedup import ALSO_REPORTED_BY
from federation.archive.record import RecordGatherer, SourcedResource
from federation.fhir_systems import site_urn
from federation.gateway.fanout import SiteIssue

__all__ = ["SITE_LAST_UPDATED", "entry_resource", "outcome", "searchset"]

SITE_LAST_UPDATED = "urn:federation:archive:site-last-updated"


def entry_resource(item: SourcedResource) -> dict[str, Any]:
    """The resource as the archive presents it (a copy; the input is not changed)."""
    resource = dict(item.data)
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("system") not in
            (ALSO_REPORTED_BY, SITE_LAST_UPDATED)]
    if meta.get("lastUpdated"):
        tags.append({"system": SITE_LAST_UPDATED, "code": meta["lastUpdated"],
                     "display": "lastUpdated at the reporting site"})
    tags += [{"system": ALSO_REPORTED_BY, "code": site, "display": "also reported by"}
             for site in item.also_reported_by]
    meta["source"] = site_urn(item.site_id)
    assert item.synced_at is not None, "a lazily gathered item is filled before it is shown"
    meta["lastUpdated"] = item.synced_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if tags:
        meta["tag"] = tags
    resource["meta"] = meta
    return resource


def outcome(issues: Sequence[SiteIssue], withheld: int) -> dict[str, Any] | None:
    """One OperationOutcome for the whole answer, or None when there is nothing to say."""
    out = [{"severity": i.severity if i.severity in ("warning", "information") else "warning",
            "code": i.code or "incomplete", "diagnostics": i.diagnostics,
            **({"location": [f"site:{i.site_id}"],
                "details": {"coding": [{"system": "urn:federation:site-id", "code": i.site_id}],
                            "text": f"site {i.site_id}"}} if i.site_id else {})}
           for i in issues]
    if withheld:
        out.append({"severity": "information", "code": "suppressed",
                    "diagnostics": "some records are withheld by the patient's consent"})
    if not out:
        return None
    return {"resourceType": "OperationOutcome", "id": str(uuid.uuid4()), "issue": out}


def _link(base: str, params: list[tuple[str, str]], offset: int) -> str:
    return f"{base}?{urlencode(params + [('_offset', str(offset))])}"


def searchset(items: Sequence[SourcedResource], *, base: str, params: list[tuple[str, str]],
              count: int, offset: int, issues: Sequence[SiteIssue] = (),
              withheld: int = 0) -> dict[str, Any]:
    """A searchset Bundle holding ``items[offset:offset + count]``; ``total`` counts all."""
    page = items[offset:offset + count]
    links = [{"relation": "self", "url": _link(base, params, offset)}]
    if offset + count < len(items):
        links.append({"relation": "next", "url": _link(base, params, offset + count)})
    if offset > 0:
        links.append({"relation": "previous",
                      "url": _link(base, params, max(0, offset - count))})
    entries: list[dict[str, Any]] = []
    problem = outcome(issues, withheld)
    if problem is not None:
        entries.append({"fullUrl": f"urn:uuid:{problem['id']}", "resource": problem,
                        "search": {"mode": "outcome"}})
    for item in page:
        if not RecordGatherer.shown(item):
            continue
        entries.append({
            "fullUrl": f"{site_urn(item.site_id)}/{item.resource_type}/{item.resource_id}",
            "resource": entry_resource(item), "search": {"mode": "match"}})
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset",
            "meta": {"lastUpdated": _now()}, "total": len(items), "link": links,
            "entry": entries}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
