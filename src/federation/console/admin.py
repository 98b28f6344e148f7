"""The regional administrator's and the auditor's pages: the consortium at a glance, the
exchange dashboards, the audit search with the log's verification, and the EMPI review
queue (issue 9).

Like every console page these are clients of the gateway's own HTTP API as the signed-in
person (:func:`federation.console.web.api`): what a page shows is what the API lets that
person see, and every call is an exchange-log row of its own. The pages call the API
concurrently where the calls are independent; a part that the API refuses or cannot
answer now (a node down, a role that may not see it) says so in its own card instead of
taking the whole page down.

* ``GET /console/admin`` — sites as the city → county → township tree with node health,
  archive sync lag, outbox backlog and the EMPI's review backlog; its health table
  (``GET /console/admin/health``, a fragment) is polled every 5 s; data quality per site
  and the EMPI's counts follow in a fragment loaded after the page
  (``GET /console/admin/details``), so a slow node never holds the page up.
* ``GET /console/admin/exchanges?days=N`` — exchange volume per site pair per day and
  referral / consult turnaround by urgency and by site, as ECharts.
* ``GET /console/admin/audit?who=&patient=&site=&purpose=&operation=&outcome=&since=&until=``
  — the audit search, the flagged anomalies, the log's verification status;
  ``POST /console/admin/audit/verify`` verifies it now.
* ``GET /console/admin/empi`` — the review queue; ``GET /console/admin/empi/{item}`` the
  two records side by side with each field's match weight;
  ``POST /console/admin/empi/{item}/{accept|reject|split}`` decides.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import urllib.parse
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.parser import text_string_to_metric_families

from federation import errors
from federation.console.web import (
    LOCAL,
    PREFIX,
    Api,
    ApiError,
    api,
    form_of,
    instant,
    lang_of,
    page,
    redirect,
    segment,
)
from federation.security.tokens import PURPOSES
from federation.store.models import OUTCOMES

__all__ = ["create_admin_router", "field_errors", "operations", "site_tree",
           "turnaround_option", "volume_option"]

T = TypeVar("T")

#: the consortium's tiers, top down
TIER_ORDER = {"city": 0, "county": 1, "township": 2}
#: the audit search form's fields, in the API's own parameter names
AUDIT_FIELDS = ("who", "patient", "site", "purpose", "operation", "outcome", "since",
                "until")
PAGE_SIZE = 50
QUEUE_SIZE = 20
DAY_CHOICES = (7, 14, 30, 92)
#: the most pairs the volume chart draws one line each for; the rest are summed
TOP_PAIRS = 8
EMPI_ACTIONS = ("accept", "reject", "split")


async def attempt(call: Awaitable[T]) -> tuple[T | None, ApiError | None]:
    """The API's answer, or why it gave none: for a part of a page that can be missing."""
    try:
        return await call, None
    except ApiError as exc:
        return None, exc


def _age_s(value: str | None, now: dt.datetime) -> float | None:
    when = instant(value)
    return None if when is None else max(0.0, (now - when).total_seconds())


# ----------------------------------------------------------------------------- overview


def site_tree(sites: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sites in tree order (each under its parent, a tier above), each with its
    ``depth``; a site whose parent is not a member stands at the top."""
    sites = list(sites)
    known = {s["site_id"] for s in sites}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in sites:
        parent = s.get("parent_site_id")
        children.setdefault(parent if parent in known else None, []).append(s)

    def key(s: dict[str, Any]) -> tuple[int, str]:
        return TIER_ORDER.get(s.get("tier") or "", 9), s["site_id"]

    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=key):
            if s["site_id"] in seen:      # a cycle in the registry must not hang the page
                continue
            seen.add(s["site_id"])
            out.append({**s, "depth": depth})
            walk(s["site_id"], depth + 1)

    walk(None, 0)
    for s in sorted(sites, key=key):      # only reachable through a cycle
        if s["site_id"] not in seen:
            out.append({**s, "depth": 0})
    return out


#: the operations figures of ``/metrics`` the health table shows (name → key)
OPS_SERIES = {"federation_inbox_pending_items": "pending",
              "federation_inbox_oldest_pending_seconds": "oldest_s",
              "federation_sync_behind_changes": "behind",
              "federation_sync_lag_seconds": "lag_s",
              "federation_sync_last_pull_age_seconds": "pull_age_s"}
OPS_TOTALS = {"federation_empi_review_open": "review_open",
              "federation_empi_review_oldest_seconds": "review_oldest_s"}


def operations(metrics_text: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per site: the archive's sync position (changes behind, lag, last pull) and the
    work queued for its node but not yet acknowledged (the outbox backlog); and the
    EMPI's review backlog — from the gateway's own ``/metrics``. Those figures are read
    from the shared store in a few index lookups on every scrape
    (:mod:`federation.store.ops_view`), where ``/api/archive/sync`` also counts every
    resource the archive holds: seconds at a million resources, too slow for a table
    polled every few seconds."""
    sites: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in OPS_SERIES and sample.labels.get("site_id"):
                sites.setdefault(sample.labels["site_id"], {})[OPS_SERIES[sample.name]] = \
                    sample.value
            elif sample.name in OPS_TOTALS:
                totals[OPS_TOTALS[sample.name]] = sample.value
    return sites, totals


async def _metrics(http: Api) -> str:
    return (await http.raw("/metrics")).text


async def health_rows(http: Api) -> tuple[list[dict[str, Any]], dict[str, float], list[str]]:
    """Every site in tree order with its node's state and heartbeat, the archive's sync
    position and the outbox backlog; the consortium-wide figures; what could not be read."""
    consortium, (metrics, metrics_error) = await asyncio.gather(
        http.get("/api/consortium"), attempt(_metrics(http)))
    now = dt.datetime.now(dt.UTC)
    ops, totals = operations(metrics) if metrics else ({}, {})
    rows = []
    for site in site_tree(consortium["sites"]):
        node = site.get("node") or {}
        figures = ops.get(site["site_id"], {})
        rows.append({**site, "state": node.get("state"),
                     "heartbeat_at": node.get("last_heartbeat_at"),
                     "heartbeat_age_s": _age_s(node.get("last_heartbeat_at"), now),
                     "software_version": node.get("software_version"),
                     "sync": figures if "behind" in figures else None,
                     "backlog": figures if "pending" in figures else None})
    problems = [str(metrics_error)] if metrics_error is not None else []
    return rows, totals, problems


# ----------------------------------------------------------------------------- charts


def _short_day(day: str) -> str:
    return day[5:]          # MM-DD


def volume_option(days: list[str], pairs: list[dict[str, Any]], lang: str) -> dict[str, Any]:
    """A stacked bar chart of exchanges per day, one series per site pair (busiest
    :data:`TOP_PAIRS`, the rest summed as one)."""
    say = (lambda zh, en: en) if lang == "en" else (lambda zh, en: zh)
    shown, rest = pairs[:TOP_PAIRS], pairs[TOP_PAIRS:]
    series = [{"name": f"{p['from']} → {p['to']}", "type": "bar", "stack": "all",
               "emphasis": {"focus": "series"}, "data": p["exchanges"]} for p in shown]
    if rest:
        series.append({"name": say("其他", "other pairs"), "type": "bar", "stack": "all",
                       "data": [sum(p["exchanges"][i] for p in rest)
                                for i in range(len(days))]})
    return {"tooltip": {"trigger": "axis"},
            "legend": {"type": "scroll", "top": 0},
            "grid": {"left": 48, "right": 16, "top": 36, "bottom": 28},
            "xAxis": {"type": "category", "data": [_short_day(d) for d in days]},
            "yAxis": {"type": "value", "name": say("次", "exchanges"), "minInterval": 1},
            "series": series}


URGENCY_ORDER = {"emergency": 0, "stat": 0, "asap": 1, "urgent": 2, "routine": 3}


def _urgency_label(urgency: str, lang: str) -> str:
    zh = {"emergency": "急诊", "stat": "急诊", "asap": "尽快", "urgent": "加急",
          "routine": "常规"}
    return urgency if lang == "en" else zh.get(urgency, urgency)


def turnaround_option(lines: list[dict[str, Any]], lang: str) -> dict[str, Any]:
    """Per urgency: the median minutes to acknowledge (left axis) and hours to complete
    (right axis) as bars; tasks counted in the tooltip's category label."""
    say = (lambda zh, en: en) if lang == "en" else (lambda zh, en: zh)
    lines = sorted(lines, key=lambda t: (URGENCY_ORDER.get(t["urgency"], 9), t["urgency"]))
    categories = [f"{_urgency_label(t['urgency'], lang)} ({t['tasks']})" for t in lines]
    return {"tooltip": {"trigger": "axis"},
            "legend": {"top": 0},
            "grid": {"left": 48, "right": 48, "top": 36, "bottom": 28},
            "xAxis": {"type": "category", "data": categories},
            "yAxis": [{"type": "value", "name": say("分钟", "min")},
                      {"type": "value", "name": say("小时", "h")}],
            "series": [
                {"name": say("接收中位数（分钟）", "median to acknowledge (min)"), "type": "bar",
                 "data": [t.get("ack_median_min") for t in lines]},
                {"name": say("完成中位数（小时）", "median to complete (h)"), "type": "bar",
                 "yAxisIndex": 1, "data": [t.get("complete_median_h") for t in lines]}]}


# ----------------------------------------------------------------------------- audit


def field_errors(exc: ApiError, names: Iterable[str], *,
                 fallback: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The API's refusal as errors at the form's fields: the fields the OperationOutcome
    names (``issue.expression``), else the parameter a message starts with ("since must
    be a date …"); ``fallback`` takes a message that names none. Returns (by field,
    messages about no field)."""
    names = tuple(names)
    fields = {k: v for k, v in exc.fields.items() if k in names}
    loose: list[str] = []
    for message in exc.messages:
        if message in fields.values():
            continue
        named = next((n for n in names if re.match(rf"^{re.escape(n)}\b", message)), None)
        if named is None and fallback is not None:
            named = fallback
        if named is not None:
            fields.setdefault(named, message)
        else:
            loose.append(message)
    return fields, loose


def _search_params(q: dict[str, str]) -> dict[str, str]:
    return {k: q[k].strip() for k in AUDIT_FIELDS if q.get(k, "").strip()}


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _anomaly_window(search: dict[str, str], bad: dict[str, str]) -> dict[str, str]:
    """The anomalies of the search's days when it names plain days, else the last week
    (also when either day is wrong: half a window would be a different question)."""
    if "since" in bad or "until" in bad:
        return {}
    return {k: search[k] for k in ("since", "until") if k in search and _DAY.match(search[k])}


def _page_link(search: dict[str, str], offset: int) -> str:
    return PREFIX + "/admin/audit?" + urllib.parse.urlencode({**search, "offset": offset})


# ----------------------------------------------------------------------------- router


def create_admin_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX + "/admin", include_in_schema=False)

    @router.get("")
    async def overview(request: Request) -> Response:
        rows, totals, problems = await health_rows(api(request))
        tiers: dict[str, int] = {}
        for r in rows:
            tiers[r.get("tier") or "?"] = tiers.get(r.get("tier") or "?", 0) + 1
        return page(request, "admin/overview.html", rows=rows, totals=totals,
                    problems=problems, tiers=tiers)

    @router.get("/health")
    async def health(request: Request) -> Response:
        rows, _, problems = await health_rows(api(request))
        return page(request, "admin/_health.html", rows=rows, problems=problems)

    @router.get("/details")
    async def details(request: Request) -> Response:
        """The overview's slower parts, fetched after the page: every node's data
        quality (a call to each node) and the EMPI's counts (a scan of its records)."""
        http = api(request)
        consortium, (quality, quality_error), (counts, counts_error) = await asyncio.gather(
            http.get("/api/consortium"), attempt(http.get("/api/quality")),
            attempt(http.get("/api/identity/counts")))
        silent = {i["site_id"]: i["diagnostics"] for i in (quality or {}).get("issues", [])
                  if i.get("site_id")}
        return page(request, "admin/_details.html", rows=site_tree(consortium["sites"]),
                    quality={q["site_id"]: q for q in (quality or {}).get("sites", [])},
                    quality_silent=silent, quality_error=quality_error, counts=counts,
                    counts_error=counts_error)

    @router.get("/exchanges")
    async def exchanges(request: Request) -> Response:
        http = api(request)
        days_raw = request.query_params.get("days", "14").strip() or "14"
        fields: dict[str, str] = {}
        (dashboard, dash_error), (referrals, ref_error), (consults, con_error) = \
            await asyncio.gather(attempt(http.get("/api/dashboard/exchanges", days=days_raw)),
                                 attempt(http.get("/api/referrals/turnaround")),
                                 attempt(http.get("/api/consults/turnaround")))
        if dash_error is not None and dash_error.status == 400:
            fields, _ = field_errors(dash_error, ("days",), fallback="days")
        lang = lang_of(request)
        charts: dict[str, Any] = {}
        if dashboard:
            charts = {"volume": volume_option(dashboard["days"], dashboard["pairs"], lang),
                      "referral": turnaround_option(dashboard["referral_turnaround"], lang),
                      "consult": turnaround_option(dashboard["consult_turnaround"], lang)}
        return page(request, "admin/exchanges.html", status=400 if fields else 200,
                    days=days_raw, day_choices=DAY_CHOICES, fields=fields,
                    dashboard=dashboard, dash_error=None if fields else dash_error,
                    charts=charts, referrals=(referrals or {}).get("lines", []),
                    consults=(consults or {}).get("lines", []),
                    ref_error=ref_error, con_error=con_error)

    @router.get("/audit")
    async def audit(request: Request) -> Response:
        q = dict(request.query_params)
        search = _search_params(q)
        try:
            offset = max(0, int(q.get("offset", "0") or 0))
        except ValueError:
            offset = 0
        http = api(request)
        (events, events_error), (verification, verify_error), (sites, _) = \
            await asyncio.gather(
                attempt(http.get("/api/audit/events", **search, _count=PAGE_SIZE,
                                 _offset=offset)),
                attempt(http.get("/api/audit/verify")),
                attempt(http.get("/api/consortium")))
        fields: dict[str, str] = {}
        loose: list[str] = []
        if events_error is not None:
            if events_error.status in (400, 404):
                fields, loose = field_errors(
                    events_error, AUDIT_FIELDS,
                    fallback="patient" if events_error.status == 404 and "patient" in search
                    else None)
            else:
                raise events_error
        if verify_error is not None and verify_error.status != 404:
            raise verify_error
        total = (events or {}).get("total", 0)
        return page(request, "admin/audit.html", status=400 if fields else 200,
                    search=search, fields=fields, loose=loose, events=events,
                    offset=offset, page_size=PAGE_SIZE,
                    newer=_page_link(search, max(0, offset - PAGE_SIZE)) if offset else None,
                    older=_page_link(search, offset + PAGE_SIZE)
                    if offset + PAGE_SIZE < total else None,
                    anomalies_query=urllib.parse.urlencode(_anomaly_window(search, fields)),
                    verification=verification,
                    sites=site_tree((sites or {}).get("sites", [])),
                    purposes=PURPOSES, outcomes=OUTCOMES)

    @router.get("/audit/anomalies")
    async def anomalies(request: Request) -> Response:
        """The flagged anomalies of a window (a fragment the audit page loads after
        itself: finding them reads every exchange of the window)."""
        window = {k: v for k, v in request.query_params.items() if k in ("since", "until")}
        found, error = await attempt(api(request).get("/api/audit/anomalies", **window))
        last_day = ""
        if found:         # the window's end is exclusive: say the last day it covers
            until = instant(found["until"])
            if until is not None:
                last_day = (until.astimezone(LOCAL) - dt.timedelta(seconds=1)).strftime(
                    "%Y-%m-%d")
        return page(request, "admin/_anomalies.html", anomalies=found,
                    anomalies_error=error, anomalies_last_day=last_day)

    @router.post("/audit/verify")
    async def verify(request: Request) -> Response:
        await form_of(request)
        result = await api(request).post("/api/audit/verify")
        if request.headers.get("hx-request") != "true":
            return redirect(request, PREFIX + "/admin/audit")
        return page(request, "admin/_verification.html", verification=result, fresh=True)

    @router.get("/empi")
    async def empi_queue(request: Request) -> Response:
        try:
            offset = max(0, int(request.query_params.get("offset", "0") or 0))
        except ValueError:
            offset = 0
        queue = await api(request).get("/api/identity/review", _count=QUEUE_SIZE,
                                       _offset=offset)
        total = queue["total"]
        base = PREFIX + "/admin/empi?offset="
        return page(request, "admin/empi_queue.html", queue=queue,
                    done=request.query_params.get("done"),
                    done_item=request.query_params.get("item"),
                    newer=f"{base}{max(0, offset - QUEUE_SIZE)}" if offset else None,
                    older=f"{base}{offset + QUEUE_SIZE}"
                    if offset + QUEUE_SIZE < total else None)

    async def item_page(request: Request, item_id: str, *, status: int = 200,
                        error: str | None = None) -> Response:
        body = await api(request).get(f"/api/identity/review/{segment(item_id)}")
        sizes = {p["person_id"]: len(p.get("records") or []) for p in body.get("persons", [])}
        # a record can be split off only from a person it shares with other records
        splittable = [r for r in body["records"] if sizes.get(r.get("person_id"), 0) > 1]
        return page(request, "admin/empi_item.html", status=status, review=body,
                    error=error, splittable=[(r["site_id"], r["record_id"]) for r in splittable])

    @router.get("/empi/{item_id}")
    async def empi_item(item_id: str, request: Request) -> Response:
        return await item_page(request, item_id)

    @router.post("/empi/{item_id}/{action}")
    async def empi_decide(item_id: str, action: str, request: Request) -> Response:
        form = await form_of(request)
        if action not in EMPI_ACTIONS:
            raise errors.NotFound(f"there is no '{action[:20]}' action on a review item; "
                                  f"the actions are {', '.join(EMPI_ACTIONS)}")
        http = api(request)
        quoted = segment(item_id)
        try:
            if action == "split":
                review = await http.get(f"/api/identity/review/{quoted}")
                mine = {(r["site_id"], r["record_id"]) for r in review["records"]}
                chosen = (form.get("site_id", ""), form.get("record_id", ""))
                if chosen not in mine:
                    raise ApiError(400, ["choose one of the two records to split off"])
                await http.post("/api/identity/records/"
                                f"{segment(chosen[0])}/"
                                f"{segment(chosen[1])}/split")
            else:
                await http.post(f"/api/identity/review/{quoted}/{action}")
        except ApiError as exc:
            if exc.status in (400, 409):
                return await item_page(request, item_id, status=exc.status, error=str(exc))
            raise
        done = {"accept": "accepted", "reject": "rejected", "split": "split"}[action]
        return redirect(request, PREFIX + "/admin/empi?" + urllib.parse.urlencode(
            {"done": done, "item": item_id}))

    return router
