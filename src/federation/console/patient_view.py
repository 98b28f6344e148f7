"""What the doctor's patient pages show, made from the API's answers: plain functions, no
I/O, so each rule is tested on its own.

* :func:`search_params` — the one search box of "find a patient" as PDQm parameters
  (``GET /fhir/Patient``): an ID number (18 digits with the GB 11643 check character, or a
  15-digit legacy one) → ``identifier``, digits like a phone → ``telecom``, anything else
  → ``name`` (characters or pinyin), which the EMPI only searches with a birth date;
* :func:`people_of` — a PDQm searchset as people (one per EMPI person), each with the
  sites that know them;
* :func:`timeline` — encounters, results and documents of ``$everything`` grouped by site
  and date;
* :func:`lab_charts` — numeric laboratory Observations as one ECharts line chart per
  LOINC code over time (one line per site);
* :func:`bundle_issues` — the warnings a Bundle carries (a site that did not answer).

Messages are ``(zh, en)`` pairs: the template says them in the reader's language.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from federation.archive.search import date_of
from federation.fhir_systems import EMPI_PERSON_SYSTEM, RESIDENT_ID_SYSTEM
from federation.nodes.adapters.normalise import (
    is_valid_resident_id,
    normalise_phone,
    upgrade_resident_id,
)

__all__ = ["Message", "Person", "SiteIssue", "bundle_issues", "lab_charts", "people_of",
           "search_params", "site_of", "timeline"]

Message = tuple[str, str]
LOINC = "http://loinc.org"
_SITE_URN = "urn:federation:site:"
_ID_SHAPE = re.compile(r"^\d{6,}[\dXx]?$")
_NAME = re.compile(r"^[\w·•．.\s'-]+$")
_MAX_CHARTS = 6
#: the consortium's local time (China Standard Time): dates on the page are the sites' dates
CST = dt.timezone(dt.timedelta(hours=8))


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def search_params(box: str, birth: str = "") -> tuple[dict[str, str], dict[str, Message]]:
    """(PDQm parameters, errors by field) for the search box and the optional birth date.

    The box decides the parameter: a well-formed resident ID goes to ``identifier`` (a
    malformed one is an error here rather than a search that finds nobody), a phone number
    to ``telecom``, a name to ``name``. A name alone does not narrow a population enough,
    so the EMPI asks for the birth date with it — said at the field before asking.
    """
    text = _fold(box)
    errors: dict[str, Message] = {}
    params: dict[str, str] = {}
    born = _fold(birth)
    if born:
        try:
            dt.date.fromisoformat(born)
            params["birthdate"] = born
        except ValueError:
            errors["birth"] = ("出生日期格式应为 年-月-日，如 1976-07-03",
                               "Birth date must be year-month-day, e.g. 1976-07-03")
    if not text:
        errors["q"] = ("请输入姓名（汉字或拼音）、身份证号或手机号",
                       "Enter a name (characters or pinyin), an ID number or a phone number")
        return params, errors
    compact = re.sub(r"[\s\-()（）]", "", text)
    digits = re.sub(r"\D", "", compact)
    if _ID_SHAPE.match(compact) and len(compact) in (15, 16, 17, 18) and not (
            compact.startswith("1") and len(digits) == 11):
        return _resident_id(compact, params, errors)
    if compact.lstrip("+").isdigit():
        phone = normalise_phone(compact) or ""
        if not 7 <= len(phone) <= 12:
            errors["q"] = ("号码位数不对：手机号 11 位，身份证号 18 位（旧版 15 位）",
                           "That number has the wrong length: a mobile phone has 11 digits, "
                           "an ID number 18 (old ones 15)")
            return params, errors
        params["telecom"] = phone
        return params, errors
    if any(c.isdigit() for c in compact) or not _NAME.match(text):
        errors["q"] = ("姓名里不能有数字或符号；身份证号、手机号请只输入号码",
                       "A name has no digits or symbols; for an ID or phone number enter "
                       "only the number")
        return params, errors
    params["name"] = " ".join(text.split())
    if "birthdate" not in params and "birth" not in errors:
        errors["birth"] = ("按姓名查找时请同时填写出生日期",
                           "To search by name, give the birth date too")
    return params, errors


def _resident_id(compact: str, params: dict[str, str], errors: dict[str, Message]
                 ) -> tuple[dict[str, str], dict[str, Message]]:
    if len(compact) == 15 and compact.isdigit():
        full = upgrade_resident_id(compact)
    elif len(compact) == 18:
        full = compact.upper()
    else:
        errors["q"] = ("身份证号应为 18 位（旧版 15 位）", "An ID number has 18 characters "
                       "(old ones 15)")
        return params, errors
    if not is_valid_resident_id(full):
        errors["q"] = ("身份证号校验不通过，请核对（最后一位是校验码，出生日期要真实）",
                       "This ID number fails its check; verify it (the last character is a "
                       "check digit, the birth date must be real)")
        return params, errors
    params["identifier"] = f"{RESIDENT_ID_SYSTEM}|{full}"
    return params, errors


def site_of(resource: dict[str, Any]) -> str:
    """The reporting site of an archive resource (``meta.source``)."""
    source = str((resource.get("meta") or {}).get("source") or "")
    return source[len(_SITE_URN):] if source.startswith(_SITE_URN) else source


@dataclass
class Person:
    """One person of a search: the matching site records and what the EMPI links."""

    person_id: str
    score: float
    names: list[str] = field(default_factory=list)
    gender: str | None = None
    birth_date: str | None = None
    matched_sites: list[str] = field(default_factory=list)
    #: every site that holds a record of the person (from the EMPI's Person)
    sites: list[str] = field(default_factory=list)
    masked_id: str | None = None
    masked_phone: str | None = None


def _name(resource: dict[str, Any]) -> str | None:
    for n in resource.get("name") or []:
        text = n.get("text") or "".join([n.get("family") or "", *(n.get("given") or [])])
        if text:
            return str(text)
    return None


def people_of(bundle: dict[str, Any]) -> tuple[list[Person], int]:
    """(people, records not yet linked to a person) of a PDQm searchset, best first."""
    people: dict[str, Person] = {}
    unlinked = 0
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        person_id = next((i.get("value") for i in resource.get("identifier") or []
                          if i.get("system") == EMPI_PERSON_SYSTEM), None)
        if not person_id:
            unlinked += 1
            continue
        score = float((entry.get("search") or {}).get("score") or 0)
        person = people.setdefault(person_id, Person(person_id, score))
        person.score = max(person.score, score)
        name = _name(resource)
        if name and name not in person.names:
            person.names.append(name)
        person.gender = person.gender or resource.get("gender")
        person.birth_date = person.birth_date or resource.get("birthDate")
        site = site_of(resource)
        if site and site not in person.matched_sites:
            person.matched_sites.append(site)
    ranked = sorted(people.values(), key=lambda p: (-p.score, p.person_id))
    return ranked, unlinked


def with_person(person: Person, body: dict[str, Any]) -> Person:
    """Fill in what the EMPI's ``Person`` says: golden name, masked ID and phone, and
    every site linked (PIXm's answer in FHIR Person form)."""
    golden = _name(body)
    if golden:
        person.names = [golden, *(n for n in person.names if n != golden)]
    person.gender = body.get("gender") or person.gender
    person.birth_date = body.get("birthDate") or person.birth_date
    person.masked_id = next((i.get("value") for i in body.get("identifier") or []
                             if i.get("system") != EMPI_PERSON_SYSTEM), None)
    person.masked_phone = next((t.get("value") for t in body.get("telecom") or []), None)
    sites = []
    for link in body.get("link") or []:
        system = str(((link.get("target") or {}).get("identifier") or {}).get("system") or "")
        site = system[len(_SITE_URN):] if system.startswith(_SITE_URN) else ""
        if site and site not in sites:
            sites.append(site)
    person.sites = sorted(sites) or sorted(person.matched_sites)
    return person


def record_at(body: dict[str, Any], site_id: str) -> str | None:
    """The person's Patient id at ``site_id`` from their EMPI ``Person``, if the site has
    one (a referral is sent for the patient as the sending site knows them)."""
    for link in body.get("link") or []:
        target = link.get("target") or {}
        ident = target.get("identifier") or {}
        if ident.get("system") == f"{_SITE_URN}{site_id}":
            return str(ident.get("value"))
    return None


# ---------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class SiteIssue:
    site: str | None
    text: str
    severity: str


def bundle_issues(bundle: dict[str, Any]) -> list[SiteIssue]:
    """The OperationOutcome entries (``search.mode = outcome``) of a searchset, naming
    the site each is about."""
    out = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") != "OperationOutcome":
            continue
        for issue in resource.get("issue") or []:
            coding = ((issue.get("details") or {}).get("coding") or [{}])[0]
            site = coding.get("code") if coding.get("system") == "urn:federation:site-id" \
                else None
            out.append(SiteIssue(site, str(issue.get("diagnostics") or issue.get("code")),
                                 str(issue.get("severity") or "warning")))
    return out


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    coding = next(iter(concept.get("coding") or []), {})
    return concept.get("text") or coding.get("display") or coding.get("code")


def _when(resource: dict[str, Any]) -> dt.datetime | None:
    found = date_of(str(resource.get("resourceType")), resource)
    return found[0] if found else None


#: timeline kinds: resource type → (zh, en)
KINDS: dict[str, Message] = {"Encounter": ("就诊", "Visit"),
                             "DiagnosticReport": ("检查检验报告", "Report"),
                             "DocumentReference": ("文书", "Document"),
                             "ImagingStudy": ("影像", "Imaging")}
TIMELINE_TYPES = ",".join(KINDS)
#: encounter classes (HL7 v3 ActCode) → (zh, en)
CLASSES: dict[str, Message] = {"AMB": ("门诊", "Outpatient"), "EMER": ("急诊", "Emergency"),
                               "IMP": ("住院", "Inpatient"), "VR": ("远程", "Remote"),
                               "HH": ("家庭", "Home visit")}


def _describe(resource: dict[str, Any]) -> str:
    kind = resource.get("resourceType")
    if kind == "Encounter":
        parts = [_text(resource.get("serviceType")),
                 *(_text(r) for r in resource.get("reasonCode") or [])]
        return " · ".join(p for p in parts if p) or "—"
    if kind == "DocumentReference":
        return resource.get("description") or _text(resource.get("type")) or "—"
    if kind == "ImagingStudy":
        modality = [m.get("code") for m in resource.get("modality") or [] if m.get("code")]
        return " · ".join(p for p in (resource.get("description"), *modality) if p) or "—"
    conclusion = resource.get("conclusion")
    return " · ".join(p for p in (_text(resource.get("code")), conclusion) if p) or "—"


@dataclass
class Day:
    date: str
    items: list[dict[str, Any]] = field(default_factory=list)


def timeline(bundle: dict[str, Any], site_order: list[str]) -> list[tuple[str, list[Day]]]:
    """[(site, [days newest first, each with its items])], sites in ``site_order`` first."""
    by_site: dict[str, dict[str, Day]] = defaultdict(dict)
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        kind = resource.get("resourceType")
        if kind not in KINDS:
            continue
        when = _when(resource)
        local = when.astimezone(CST) if when else None
        key = local.strftime("%Y-%m-%d") if local else ""
        day = by_site[site_of(resource)].setdefault(key, Day(key))
        klass = (resource.get("class") or {}).get("code") if kind == "Encounter" else None
        day.items.append({"kind": kind, "label": CLASSES.get(klass or "", KINDS[kind]),
                          "what": _describe(resource),
                          "time": local.strftime("%H:%M") if local else "",
                          "status": resource.get("status"), "at": when})
    order = {s: i for i, s in enumerate(site_order)}
    out = []
    for site in sorted(by_site, key=lambda s: (order.get(s, len(order)), s)):
        days = sorted(by_site[site].values(), key=lambda d: d.date, reverse=True)
        for d in days:
            d.items.sort(key=lambda i: i["time"])
        out.append((site, days))
    return out


def _loinc(resource: dict[str, Any]) -> tuple[str, str] | None:
    concept = resource.get("code") or {}
    for c in concept.get("coding") or []:
        if c.get("system") == LOINC and c.get("code"):
            return str(c["code"]), str(concept.get("text") or c.get("display") or c["code"])
    return None


def lab_charts(bundle: dict[str, Any], names: dict[str, str],
               most: int = _MAX_CHARTS) -> list[dict[str, Any]]:
    """One chart per LOINC code with numeric values (the most measured first): ``{code,
    title, unit, points, option}`` where ``option`` is the ECharts option (a time axis,
    one line per site, the reference range as a band when the sites give one)."""
    series: dict[str, dict[str, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
    titles: dict[str, str] = {}
    units: dict[str, str] = {}
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") != "Observation":
            continue
        code = _loinc(resource)
        quantity = resource.get("valueQuantity") or {}
        when = _when(resource)
        if code is None or when is None or not isinstance(quantity.get("value"), int | float):
            continue
        loinc, title = code
        titles.setdefault(loinc, title)
        units.setdefault(loinc, str(quantity.get("unit") or quantity.get("code") or ""))
        if (quantity.get("unit") or quantity.get("code") or "") not in ("", units[loinc]):
            continue            # another unit cannot share the axis
        series[loinc][site_of(resource)].append(
            (when.astimezone(CST).isoformat(), float(quantity["value"])))
        rr = next(iter(resource.get("referenceRange") or []), None)
        if rr and loinc not in ranges:
            ranges[loinc] = ((rr.get("low") or {}).get("value"),
                             (rr.get("high") or {}).get("value"))
    ranked = sorted(series, key=lambda c: (-sum(len(v) for v in series[c].values()), c))
    return [_chart(c, titles[c], units[c], series[c], ranges.get(c), names)
            for c in ranked[:most]]


def _chart(code: str, title: str, unit: str, by_site: dict[str, list[tuple[str, float]]],
           normal: tuple[float | None, float | None] | None,
           names: dict[str, str]) -> dict[str, Any]:
    lines = []
    for site in sorted(by_site):
        points = sorted(by_site[site])
        line: dict[str, Any] = {"name": names.get(site, site), "type": "line",
                                "data": [[t, v] for t, v in points], "symbolSize": 6,
                                "connectNulls": True}
        lines.append(line)
    if normal and lines and (normal[0] is not None or normal[1] is not None):
        band = [{"yAxis": normal[0] if normal[0] is not None else "min"},
                {"yAxis": normal[1] if normal[1] is not None else "max"}]
        lines[0]["markArea"] = {"silent": True, "itemStyle": {"color": "rgba(28,124,60,0.08)"},
                                "data": [band]}
    option = {
        "animation": False,
        "title": {"text": f"{title}" + (f" ({unit})" if unit else ""), "left": 0,
                  "textStyle": {"fontSize": 13}},
        "tooltip": {"trigger": "axis"},
        "legend": {"bottom": 0, "left": "center", "itemHeight": 8,
                   "textStyle": {"fontSize": 11}},
        "grid": {"left": 44, "right": 14, "top": 30, "bottom": 48},
        "xAxis": {"type": "time"},
        "yAxis": {"type": "value", "scale": True, "name": unit},
        "series": lines,
    }
    return {"code": code, "title": title, "unit": unit,
            "points": sum(len(v) for v in by_site.values()), "option": option}
