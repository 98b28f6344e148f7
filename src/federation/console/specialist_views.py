"""What the specialist's pages show, made from the consult API's answers: a Task as a line
of the inbox, the case's parts from its Bundle, the pool's free slots, the signed report
versions with their verification, and the ECG as an ECharts option.

Pure: the routes (:mod:`federation.console.specialist`) fetch, these shape. Nothing here
calls the API, a service or a store; checking a report's signature needs only the report,
its Provenance and the consortium CA certificate (as ``federation consult verify`` does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from federation.consult.fhir import (
    ACK_DUE_URL,
    POOL_SYSTEM,
    REPORT_MARK_SYSTEM,
    SLOT_MINUTES_URL,
)
from federation.consult.report import verify_report
from federation.consult.rules import DAYS, Slots
from federation.errors import FederationError

__all__ = ["CaseLine", "ReportVersion", "case_line", "lines", "resources_of", "free_slots",
           "report_versions", "ecg_option", "downsample", "LEADS"]

#: the standard 12-lead order (as the ECG renders them, left column then right)
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
#: points per lead drawn: more than a 1366-pixel screen's half can show, far fewer than
#: 10 s × 500 Hz — min/max pairs per bucket keep every QRS peak
ECG_POINTS = 1200


def _ref_user(ref: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(user, site) of a Practitioner reference ("dr-li at city-1"), else None."""
    if not ref or ref.get("type") != "Practitioner":
        return None
    user = (ref.get("identifier") or {}).get("value", "")
    display = str(ref.get("display") or "")
    site = display.rsplit(" at ", 1)[1] if " at " in display else ""
    return user, site


def _site_of(ref: Mapping[str, Any] | None) -> str:
    display = str((ref or {}).get("display") or "")
    return display.rsplit(" at ", 1)[1] if " at " in display else display


@dataclass(frozen=True, slots=True)
class CaseLine:
    """One consult as the inbox and the case page show it."""

    id: str
    version: int
    title: str                  # "心电会诊 ECG consult (offline)"
    mode: str                   # offline | interactive
    priority: str               # routine | urgent | stat
    status: str
    business: str
    requester: str              # "dr-wang"
    requester_site: str
    owner: tuple[str, str] | None   # (user, site) of the claimant
    authored: str
    ack_due: str | None
    complete_due: str | None
    session_start: str | None
    reported: bool
    escalated: bool
    person_id: str | None
    patient_id: str

    @property
    def unclaimed(self) -> bool:
        return self.business == "awaiting-claim"


def case_line(task: Mapping[str, Any]) -> CaseLine:
    title = str((task.get("code") or {}).get("text") or "")
    mode = "interactive" if title.endswith("(interactive)") else "offline"
    requester = _ref_user(task.get("requester")) or ("", "")
    ack = next((e.get("valueDateTime") for e in task.get("extension") or []
                if e.get("url") == ACK_DUE_URL), None)
    subject = task.get("for") or {}
    return CaseLine(
        id=str(task["id"]), version=int((task.get("meta") or {}).get("versionId") or 0),
        title=title, mode=mode, priority=str(task.get("priority") or "routine"),
        status=str(task.get("status")),
        business=str((task.get("businessStatus") or {}).get("text") or task.get("status")),
        requester=requester[0], requester_site=requester[1] or _site_of(subject),
        owner=_ref_user(task.get("owner")), authored=str(task.get("authoredOn") or ""),
        ack_due=ack, complete_due=((task.get("restriction") or {}).get("period") or {}).get("end"),
        session_start=(task.get("executionPeriod") or {}).get("start"),
        reported=bool(task.get("output")),
        escalated=any(t.get("code") == "escalated"
                      for t in (task.get("meta") or {}).get("tag") or []),
        person_id=(subject.get("identifier") or {}).get("value"),
        patient_id=str(subject.get("reference", "")).removeprefix("Patient/"))


def lines(bundle: Mapping[str, Any]) -> list[CaseLine]:
    return [case_line(e["resource"]) for e in bundle.get("entry") or []
            if e.get("resource", {}).get("resourceType") == "Task"]


def resources_of(bundle: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The consult's Bundle by resource type."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") or {}
        out.setdefault(str(res.get("resourceType")), []).append(res)
    return out


# ---------------------------------------------------------------------- slots

def pool_slots(role: Mapping[str, Any]) -> Slots | None:
    """A pool's weekly slots from its PractitionerRole (availableTime + slot length)."""
    minutes = next((e.get("valueInteger") for e in role.get("extension") or []
                    if e.get("url") == SLOT_MINUTES_URL), None)
    avail = next(iter(role.get("availableTime") or []), None)
    if not minutes or not avail:
        return None
    return Slots(tuple(d for d in avail.get("daysOfWeek") or DAYS if d in DAYS),
                 dt.time.fromisoformat(avail["availableStartTime"]),
                 dt.time.fromisoformat(avail["availableEndTime"]), int(minutes))


def pool_role(roles: Mapping[str, Any], pool_id: str) -> dict[str, Any] | None:
    for entry in roles.get("entry") or []:
        role = entry.get("resource") or {}
        if any(c.get("system") == POOL_SYSTEM and c.get("code") == pool_id
               for concept in role.get("code") or [] for c in concept.get("coding") or []):
            return role
    return None


def free_slots(role: Mapping[str, Any] | None, booked: Iterable[str], now: dt.datetime,
               count: int = 8) -> list[dt.datetime]:
    """The pool's next ``count`` slots that the specialist has not booked already."""
    slots = pool_slots(role) if role else None
    if slots is None:
        return []
    taken = {dt.datetime.fromisoformat(b.replace("Z", "+00:00")) for b in booked if b}
    return [s for s in slots.upcoming(now, count + len(taken)) if s not in taken][:count]


# ---------------------------------------------------------------------- reports

@dataclass(frozen=True, slots=True)
class ReportVersion:
    id: str
    version: int
    status: str                 # final | amended
    conclusion: str
    codes: list[str]
    issued: str
    author: str
    superseded: str | None      # "superseded by … at …"
    valid: bool
    check: str                  # who signed it, or why the check failed


def report_versions(found: Mapping[str, list[dict[str, Any]]], ca_pem: bytes | None
                    ) -> list[ReportVersion]:
    """Every report version, newest first, each checked against its Provenance and the
    consortium CA (as ``federation consult verify`` checks a delivered report)."""
    provs = {p["target"][0]["reference"]: p for p in found.get("Provenance", [])
             if p.get("target")}
    out = []
    for r in found.get("DiagnosticReport", []):
        rid = str(r.get("id"))
        prov = provs.get(f"DiagnosticReport/{rid}")
        if prov is None:
            valid, check = False, "no signature (no Provenance targets it)"
        elif ca_pem is None:
            valid, check = False, "the consortium CA certificate is not at hand"
        else:
            try:
                signer = verify_report(r, prov, ca_pem)
                valid, check = True, f"{signer.name} ({', '.join(signer.staff_roles)}) " \
                                     f"@ {signer.site_id}"
            except FederationError as exc:
                valid, check = False, exc.message
            except ValueError as exc:      # a certificate that does not even parse
                valid, check = False, str(exc)
        mark = next((t.get("display") for t in (r.get("meta") or {}).get("tag") or []
                     if t.get("system") == REPORT_MARK_SYSTEM), None)
        codes = [" · ".join(x for x in (c.get("code"), c.get("display")) if x)
                 for concept in r.get("conclusionCode") or []
                 for c in concept.get("coding") or []]
        author = (_ref_user((r.get("performer") or [None])[0]) or ("", ""))[0]
        out.append(ReportVersion(rid, int(rid.rsplit("-r", 1)[-1]) if "-r" in rid else 0,
                                 str(r.get("status")), str(r.get("conclusion") or ""), codes,
                                 str(r.get("issued") or ""), author, mark, valid, check))
    return sorted(out, key=lambda v: -v.version)


# ---------------------------------------------------------------------- ECG

def downsample(samples: list[float], points: int) -> list[float]:
    """At most ``points`` values: the min and the max of each bucket, in time order, so
    that sharp deflections (QRS) survive the thinning."""
    n = len(samples)
    if n <= points:
        return list(samples)
    buckets = max(1, points // 2)
    out: list[float] = []
    for b in range(buckets):
        part = samples[b * n // buckets:(b + 1) * n // buckets]
        if not part:
            continue
        lo, hi = part.index(min(part)), part.index(max(part))
        out += [part[lo], part[hi]] if lo <= hi else [part[hi], part[lo]]
    return out


def ecg_option(view: Mapping[str, Any], *, title: str = "") -> dict[str, Any]:
    """The ECharts option of a 12-lead ECG (the API's ``…/view`` JSON): one grid per lead,
    limb leads left and chest leads right, in millivolts on a shared scale."""
    leads: Mapping[str, list[float]] = view.get("leads") or {}
    names = [n for n in LEADS if n in leads] + [n for n in leads if n not in LEADS]
    scale = 1000.0 if view.get("unit", "uV") == "uV" else 1.0
    rows = max(1, (len(names) + 1) // 2)
    top, height, gap = 4.0, 88.0 / rows, 1.2
    grids, xs, ys, series = [], [], [], []
    values = []
    for i, name in enumerate(names):
        col, row = divmod(i, rows)
        mv = [round(v / scale, 3) for v in downsample(list(leads[name]), ECG_POINTS)]
        values += mv
        grids.append({"left": f"{3 + col * 49}%", "width": "45%",
                      "top": f"{top + row * height:.1f}%", "height": f"{height - gap:.1f}%"})
        xs.append({"type": "category", "gridIndex": i, "boundaryGap": False,
                   "axisLabel": {"show": False},
                   "axisTick": {"show": False},
                   "splitLine": {"show": True, "interval": max(1, len(mv) // 50) - 1,
                                 "lineStyle": {"color": "#f4c7c3"}}})
        ys.append({"type": "value", "gridIndex": i, "name": name, "nameLocation": "middle",
                   "nameRotate": 0, "nameGap": 18, "axisLabel": {"show": False},
                   "splitLine": {"lineStyle": {"color": "#f4c7c3"}}})
        series.append({"name": name, "type": "line", "xAxisIndex": i, "yAxisIndex": i,
                       "data": mv, "showSymbol": False, "sampling": "none",
                       "lineStyle": {"width": 1, "color": "#1d2733"}, "animation": False})
    if values:
        lo, hi = min(values), max(values)
        for y in ys:
            y |= {"min": round(lo - 0.1, 2), "max": round(hi + 0.1, 2)}
    return {"animation": False, "title": {"text": title, "textStyle": {"fontSize": 12},
                                          "left": "center", "top": 0},
            "grid": grids, "xAxis": xs, "yAxis": ys, "series": series}
