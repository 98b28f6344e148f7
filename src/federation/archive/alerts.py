"""Critical-result alerts (危急值预警): a new lab result past a critical limit reaches the
clinicians caring for the person at *other* sites, through their node's inbox.

:func:`critical_finding` is the pure check: a laboratory Observation (FHIR R4 §8.1.2)
with a LOINC code that has limits in the packaged table
(``archive/data/critical-limits.json``, kept as data: name, UCUM unit, low, high), a
numeric ``valueQuantity`` in that unit, and a value below ``low`` or above ``high``.
Comparators count the way they point (``<2.0`` is below 2.8; ``>0.5`` above 0.5).

:class:`CriticalAlerts` runs in the gateway on every batch the change-feed puller takes
(replicated or federated site alike: the feed passes through the gateway either way).
For a finding it asks the care-episode sources (:mod:`federation.archive.care`) which
sites have an open referral/consult for the person, and queues one ``notice`` work item
per such site (except the one that reported the result) carrying a FHIR Communication
(category alert, priority stat) about the Observation. The work item id is derived from
(observation site, observation id, target site), and the store's enqueue is idempotent
on it: one alert per observation per site, across replays, restarts and replicas.

Results whose effective time is older than ``max_age`` (a history load, a late
correction) raise no alert: they are not news for the bedside.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

from federation.archive.care import CareEpisode, CareRegistry
from federation.archive.search import date_of
from federation.errors import FederationError
from federation.fhir_systems import site_urn
from federation.gateway.inbox import Inbox

__all__ = ["CriticalAlerts", "CriticalFinding", "Limit", "alert_item_id",
           "communication", "critical_finding", "load_limits"]

log = logging.getLogger("federation.archive.alerts")
LOINC = "http://loinc.org"
_UNITLESS = {"{INR}": ("", "INR", "{INR}"), "[pH]": ("", "pH", "[pH]")}


@dataclass(frozen=True, slots=True)
class Limit:
    loinc: str
    name: str
    unit: str
    low: Decimal | None
    high: Decimal | None


@dataclass(frozen=True, slots=True)
class CriticalFinding:
    loinc: str
    name: str
    value: Decimal
    unit: str
    direction: str                  # "low" | "high"
    limit: Decimal


@cache
def load_limits() -> Mapping[str, Limit]:
    """The packaged critical-limit table, by LOINC code."""
    raw = json.loads(resources.files("federation.archive.data")
                     .joinpath("critical-limits.json").read_text(encoding="utf-8"))
    return {code: Limit(code, v["name"], v["unit"],
                        Decimal(str(v["low"])) if "low" in v else None,
                        Decimal(str(v["high"])) if "high" in v else None)
            for code, v in raw["limits"].items()}


def _is_lab(obs: dict[str, Any]) -> bool:
    return any(c.get("code") == "laboratory" for cat in obs.get("category") or []
               for c in (cat.get("coding") or []))


def _unit_ok(limit: Limit, quantity: dict[str, Any]) -> bool:
    unit = quantity.get("code") or quantity.get("unit") or ""
    return unit in _UNITLESS.get(limit.unit, (limit.unit,))


def critical_finding(obs: dict[str, Any], limits: Mapping[str, Limit] | None = None
                     ) -> CriticalFinding | None:
    """The critical finding in a lab Observation, or None (see the module docstring)."""
    limits = load_limits() if limits is None else limits
    if obs.get("resourceType") != "Observation" or not _is_lab(obs):
        return None
    if obs.get("status") in ("cancelled", "entered-in-error", "registered"):
        return None
    quantity = obs.get("valueQuantity")
    if not isinstance(quantity, dict) or "value" not in quantity:
        return None
    for coding in (obs.get("code") or {}).get("coding") or []:
        limit = limits.get(coding.get("code", "")) if coding.get("system") == LOINC else None
        if limit is None or not _unit_ok(limit, quantity):
            continue
        try:
            value = Decimal(str(quantity["value"]))
        except (InvalidOperation, ValueError):
            return None
        comparator = quantity.get("comparator", "")
        if limit.low is not None and value < limit.low and comparator not in (">", ">="):
            return CriticalFinding(limit.loinc, limit.name, value, limit.unit, "low", limit.low)
        if limit.high is not None and value > limit.high and comparator not in ("<", "<="):
            return CriticalFinding(limit.loinc, limit.name, value, limit.unit, "high", limit.high)
    return None


def alert_item_id(obs_site: str, obs_id: str, target_site: str) -> str:
    digest = hashlib.sha256(f"{obs_site}/Observation/{obs_id}->{target_site}".encode())
    return f"critical-{digest.hexdigest()[:40]}"


def communication(obs_site: str, obs: dict[str, Any], finding: CriticalFinding,
                  episode: CareEpisode, local_patient: str | None) -> dict[str, Any]:
    """The alert as a FHIR R4 Communication (§13.x), addressed to the episode's clinicians."""
    arrow = "<" if finding.direction == "low" else ">"
    when = obs.get("effectiveDateTime") or obs.get("issued") or ""
    text = (f"危急值 critical result: {finding.name} {finding.value} {finding.unit} "
            f"(critical {arrow} {finding.limit}) reported by site {obs_site} at {when}; "
            f"your {episode.kind} {episode.ref} is open for this patient")
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "id": alert_item_id(obs_site, obs["id"], episode.site_id),
        "status": "completed",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "alert", "display": "Alert"}]}],
        "priority": "stat",
        "sent": dt.datetime.now(dt.UTC).isoformat(),
        "about": [{"reference": f"Observation/{obs['id']}",
                   "identifier": {"system": site_urn(obs_site), "value": obs["id"]}},
                  {"display": f"{episode.kind} {episode.ref}"}],
        "sender": {"identifier": {"system": "urn:federation:site-id", "value": obs_site}},
        "payload": [{"contentString": text}],
    }
    if local_patient:
        comm["subject"] = {"reference": f"Patient/{local_patient}"}
    if episode.clinicians:
        comm["recipient"] = [{"reference": f"Practitioner/{c}"} for c in episode.clinicians]
    return comm


class CriticalAlerts:
    """The puller's hook: check each new lab result, alert the other sites' episodes."""

    def __init__(self, inbox: Inbox, care: CareRegistry, *, person_of: Any,
                 records_of: Any, max_age: dt.timedelta,
                 limits: Mapping[str, Limit] | None = None) -> None:
        self._inbox, self._care = inbox, care
        self._person_of, self._records_of = person_of, records_of
        self._max_age = max_age
        self._limits = limits if limits is not None else load_limits()
        self.sent = 0

    def findings(self, site_id: str, changes: Sequence[Any], now: dt.datetime
                 ) -> list[tuple[str, dict[str, Any], CriticalFinding]]:
        """(patient id, observation, finding) for each fresh critical lab result."""
        out = []
        for c in changes:
            if c.deleted or c.resource_type != "Observation" or not c.body or not c.patient_id:
                continue
            obs = json.loads(c.body)
            finding = critical_finding(obs, self._limits)
            when = date_of("Observation", obs)
            if finding is None or when is None or when[0] < now - self._max_age:
                continue
            out.append((c.patient_id, obs, finding))
        return out

    def plan(self, site_id: str, changes: Sequence[Any], now: dt.datetime
             ) -> list[tuple[str, str, bytes]]:
        """(target site, item id, payload) of every alert these changes call for (sync)."""
        plans = []
        for patient_id, obs, finding in self.findings(site_id, changes, now):
            person = self._person_of(site_id, patient_id)
            if person is None:
                continue
            episodes = [e for e in self._care.open_episodes(person) if e.site_id != site_id]
            if not episodes:
                continue
            records = dict(self._records_of(person))
            for episode in episodes:
                comm = communication(site_id, obs, finding, episode,
                                     records.get(episode.site_id))
                plans.append((episode.site_id, comm["id"],
                              json.dumps(comm, ensure_ascii=False).encode()))
        return plans

    async def __call__(self, site_id: str, changes: Sequence[Any]) -> None:
        import asyncio

        plans = await asyncio.to_thread(self.plan, site_id, changes, dt.datetime.now(dt.UTC))
        for target, item_id, payload in plans:
            try:
                await self._inbox.enqueue(target, "notice", payload, source_site=site_id,
                                          item_id=item_id)
                self.sent += 1
                log.info("critical-result alert %s queued for site %s", item_id, target)
            except FederationError as exc:
                log.warning("critical-result alert %s for site %s failed: %s", item_id,
                            target, exc.message)
