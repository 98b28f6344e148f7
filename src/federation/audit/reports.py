"""Administrators' reports over the exchange log: volume, purposes, refusals, break-glass,
and anomalies worth a look. Pure: takes exchange entries, returns JSON-ready dicts.

Days and nights are counted in the consortium's local time (China Standard Time, UTC+8,
no daylight saving) unless another offset is given.

Anomaly rules (each finding names its rule, the requester, the day and the numbers):

``unrelated-persons``
    A requester (a user, operator or node, by certificate name) read more than
    ``persons_per_day`` distinct patients in one day **without a care relationship**. A
    patient (the log's pseudonymous ``patient_ref``) is related to a requester's site
    when, in the window, (a) the patient is that site's own (an exchange targeted the
    requester's site about that patient), or (b) a referral or consultation exchange
    (operation ``Referral…``/``Consult…``) about the patient involved the site. Requesters
    without a site (operators) have no care relationships.
``bulk-night-reads``
    A requester read at least ``night_reads`` times, or received at least
    ``night_records`` records, between 22:00 and 06:00 local time in one night (a night
    belongs to the day it starts on).
``beyond-peers``
    A requesting site made more than ``peer_factor`` × the median of the other requesting
    sites' reads that day, and more than ``peer_minimum`` reads beyond what its referrals
    and consultations that day explain (``reads_per_referral`` reads each).

Break-glass is the HL7 v3 purpose ``ETREAT`` (emergency treatment); its reason is the
exchange's detail text, which the requester supplies when breaking the glass.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from federation.audit.events import BREAK_GLASS, action_of
from federation.store.models import ExchangeEntry

__all__ = ["Rules", "CST", "build_report", "exchange_volume", "find_anomalies"]

CST = dt.timezone(dt.timedelta(hours=8), "CST")
_CARE_PREFIXES = ("Referral", "Consult")


@dataclass(frozen=True, slots=True)
class Rules:
    persons_per_day: int = 20
    night_reads: int = 50
    night_records: int = 200
    peer_factor: float = 5.0
    peer_minimum: int = 50
    reads_per_referral: int = 10


def _requester(e: ExchangeEntry) -> str:
    return f"{e.requester_kind}:{e.requester_id}"


def _is_care(e: ExchangeEntry) -> bool:
    name = e.operation.split("/", 1)[-1]
    return e.operation.startswith(_CARE_PREFIXES) or name.startswith(_CARE_PREFIXES)


def build_report(entries: Iterable[ExchangeEntry], *, since: dt.datetime, until: dt.datetime,
                 rules: Rules = Rules(), tz: dt.tzinfo = CST) -> dict[str, object]:
    """The report for exchanges in [since, until)."""
    rows = sorted((e for e in entries if since <= e.at < until), key=lambda e: e.at)
    purposes: Counter[str] = Counter()
    refusals: Counter[tuple[str, str, str]] = Counter()
    glass = []
    for e in rows:
        if action_of(e.operation) == "R":
            purposes[e.purpose or "unspecified"] += 1
        if e.outcome == "refused":
            refusals[(_requester(e), e.operation, e.status_code)] += 1
        if e.purpose == BREAK_GLASS:
            glass.append({"at": e.at.isoformat(), "requester": _requester(e),
                          "requester_site": e.requester_site, "target_site": e.target_site,
                          "operation": e.operation, "patient_ref": e.patient_ref,
                          "outcome": e.outcome, "reason": e.detail or "(no reason given)"})
    return {
        "since": since.isoformat(), "until": until.isoformat(), "exchanges": len(rows),
        "volume": exchange_volume(rows, tz),
        "reads_by_purpose": dict(sorted(purposes.items())),
        "refusals": [{"requester": r, "operation": o, "status": s, "count": n}
                     for (r, o, s), n in sorted(refusals.items(), key=lambda t: -t[1])],
        "break_glass": glass,
        "anomalies": _anomalies(rows, rules, tz),
        "rules": {k: getattr(rules, k) for k in rules.__slots__},
    }


def exchange_volume(entries: Iterable[ExchangeEntry], tz: dt.tzinfo = CST
                    ) -> list[dict[str, object]]:
    """Exchanges and records per local day and (requesting site, target site), sorted; a
    requester without a site (an operator) stands as ``kind:id``, no target as
    ``gateway``."""
    volume: Counter[tuple[str, str, str]] = Counter()
    records: Counter[tuple[str, str, str]] = Counter()
    for e in entries:
        day = e.at.astimezone(tz).date().isoformat()
        pair = (day, e.requester_site or _requester(e), e.target_site or "gateway")
        volume[pair] += 1
        records[pair] += e.records
    return [{"day": d, "from": a, "to": b, "exchanges": n, "records": records[(d, a, b)]}
            for (d, a, b), n in sorted(volume.items())]


def find_anomalies(entries: Iterable[ExchangeEntry], *, since: dt.datetime, until: dt.datetime,
                   rules: Rules = Rules(), tz: dt.tzinfo = CST) -> list[dict[str, object]]:
    """Only the anomalies of :func:`build_report` (the console's "flagged" list)."""
    rows = sorted((e for e in entries if since <= e.at < until), key=lambda e: e.at)
    return _anomalies(rows, rules, tz)


def _anomalies(rows: list[ExchangeEntry], rules: Rules, tz: dt.tzinfo) -> list[dict[str, object]]:
    return [*_unrelated(rows, rules, tz), *_night(rows, rules, tz), *_peers(rows, rules, tz)]


def _reads(rows: list[ExchangeEntry]) -> list[ExchangeEntry]:
    return [e for e in rows if action_of(e.operation) == "R" and e.outcome == "ok"]


def _unrelated(rows: list[ExchangeEntry], rules: Rules, tz: dt.tzinfo) -> list[dict[str, object]]:
    related: set[tuple[str, str]] = set()
    for e in rows:
        if not e.patient_ref:
            continue
        if e.target_site:
            related.add((e.target_site, e.patient_ref))      # the site's own patient
        if _is_care(e):
            for site in (e.requester_site, e.target_site):
                if site:
                    related.add((site, e.patient_ref))
    unrelated: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in _reads(rows):
        if e.patient_ref and (e.requester_site or "", e.patient_ref) not in related:
            unrelated[(_requester(e), e.at.astimezone(tz).date().isoformat())].add(e.patient_ref)
    return [{"rule": "unrelated-persons", "requester": who, "day": day, "persons": len(refs),
             "threshold": rules.persons_per_day,
             "why": f"read {len(refs)} persons without a care relationship in one day"}
            for (who, day), refs in sorted(unrelated.items())
            if len(refs) > rules.persons_per_day]


def _night(rows: list[ExchangeEntry], rules: Rules, tz: dt.tzinfo) -> list[dict[str, object]]:
    reads: Counter[tuple[str, str]] = Counter()
    got: Counter[tuple[str, str]] = Counter()
    for e in _reads(rows):
        local = e.at.astimezone(tz)
        if local.hour >= 22 or local.hour < 6:
            night = (local - dt.timedelta(hours=6)).date().isoformat()
            reads[(_requester(e), night)] += 1
            got[(_requester(e), night)] += e.records
    return [{"rule": "bulk-night-reads", "requester": who, "night": night, "reads": n,
             "records": got[(who, night)],
             "why": f"{n} reads, {got[(who, night)]} records between 22:00 and 06:00"}
            for (who, night), n in sorted(reads.items())
            if n >= rules.night_reads or got[(who, night)] >= rules.night_records]


def _peers(rows: list[ExchangeEntry], rules: Rules, tz: dt.tzinfo) -> list[dict[str, object]]:
    reads: dict[str, Counter[str]] = defaultdict(Counter)
    care: Counter[tuple[str, str]] = Counter()
    for e in rows:
        day = e.at.astimezone(tz).date().isoformat()
        if e.requester_site and _is_care(e):
            care[(e.requester_site, day)] += 1
    for e in _reads(rows):
        if e.requester_site:
            reads[e.at.astimezone(tz).date().isoformat()][e.requester_site] += 1
    out: list[dict[str, object]] = []
    for day, by_site in sorted(reads.items()):
        for site, n in sorted(by_site.items()):
            others = [m for s, m in by_site.items() if s != site]
            if not others:
                continue
            median = statistics.median(others)
            explained = care[(site, day)] * rules.reads_per_referral
            if n > rules.peer_factor * median and n - explained > rules.peer_minimum:
                out.append({"rule": "beyond-peers", "requester_site": site, "day": day,
                            "reads": n, "peer_median": median, "explained_by_referrals": explained,
                            "why": f"{n} reads against a peer median of {median:g}; referrals "
                                   f"and consultations explain {explained}"})
    return out
