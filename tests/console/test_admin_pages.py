"""The regional administrator's and the auditor's pages (federation.console.admin).

Over HTTP against an in-process gateway: what each page shows, its form errors at the
field, the htmx fragments, and a doctor refused on every one of them. The same pages in
a real browser: ``test_admin_browser.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import re

import httpx
import pytest

from federation.console.admin import (
    field_errors,
    operations,
    site_tree,
    turnaround_option,
    volume_option,
)
from federation.console.web import ApiError
from federation.identity.index import RecordRef
from tests.conftest import admin_token, staff_token

ADMIN_PAGES = ("/console/admin", "/console/admin/health", "/console/admin/details",
               "/console/admin/exchanges", "/console/admin/audit/anomalies",
               "/console/admin/audit", "/console/admin/empi", "/console/admin/empi/1")
ADMIN_POSTS = ("/console/admin/audit/verify", "/console/admin/empi/1/accept")


# ------------------------------------------------------------------------------ pure parts


def test_the_site_tree_puts_each_site_under_its_parent_tier_by_tier() -> None:
    sites = [{"site_id": "township-a1", "tier": "township", "parent_site_id": "county-a"},
             {"site_id": "county-b", "tier": "county", "parent_site_id": "city-1"},
             {"site_id": "city-1", "tier": "city", "parent_site_id": None},
             {"site_id": "county-a", "tier": "county", "parent_site_id": "city-1"},
             {"site_id": "lost", "tier": "township", "parent_site_id": "gone"},
             {"site_id": "loop-1", "tier": "county", "parent_site_id": "loop-2"},
             {"site_id": "loop-2", "tier": "county", "parent_site_id": "loop-1"}]
    tree = site_tree(sites)
    assert [(s["site_id"], s["depth"]) for s in tree] == [
        ("city-1", 0), ("county-a", 1), ("township-a1", 2), ("county-b", 1), ("lost", 0),
        ("loop-1", 0), ("loop-2", 0)]


def test_an_api_refusal_lands_at_the_field_it_names() -> None:
    exc = ApiError(400, ["since must be a date YYYY-MM-DD or an ISO 8601 date-time",
                         "something else entirely"])
    fields, loose = field_errors(exc, ("since", "until"))
    assert fields == {"since": exc.messages[0]}
    assert loose == ["something else entirely"]
    named = ApiError(400, ["bad value"], {"until": "bad value"})
    assert field_errors(named, ("since", "until")) == ({"until": "bad value"}, [])
    assert field_errors(ApiError(404, ["no such person"]), ("patient",),
                        fallback="patient") == ({"patient": "no such person"}, [])


def test_the_health_figures_come_from_the_operations_metrics() -> None:
    text = "\n".join([
        "# TYPE federation_inbox_pending_items gauge",
        'federation_inbox_pending_items{site_id="county-a"} 3.0',
        'federation_inbox_pending_items{site_id="city-1"} 0.0',
        "# TYPE federation_inbox_oldest_pending_seconds gauge",
        'federation_inbox_oldest_pending_seconds{site_id="county-a"} 95.5',
        "# TYPE federation_sync_behind_changes gauge",
        'federation_sync_behind_changes{site_id="county-a"} 12.0',
        "# TYPE federation_sync_lag_seconds gauge",
        'federation_sync_lag_seconds{site_id="county-a"} 40.0',
        "# TYPE federation_node_up gauge",
        'federation_node_up{site_id="county-a",tier="county"} 1.0',
        "# TYPE federation_empi_review_open gauge",
        "federation_empi_review_open 7.0", ""])
    sites, totals = operations(text)
    assert sites == {"county-a": {"pending": 3.0, "oldest_s": 95.5, "behind": 12.0,
                                  "lag_s": 40.0},
                     "city-1": {"pending": 0.0}}
    assert totals == {"review_open": 7.0}


def test_chart_options_align_with_the_days_and_sum_the_quiet_pairs() -> None:
    days = ["2026-11-28", "2026-11-29"]
    pairs = [{"from": f"s{i}", "to": "city-1", "exchanges": [i, 1], "total": i + 1}
             for i in range(10, 0, -1)]
    option = volume_option(days, pairs, "en")
    assert option["xAxis"]["data"] == ["11-28", "11-29"]
    assert len(option["series"]) == 9
    assert option["series"][-1]["name"] == "other pairs"
    assert option["series"][-1]["data"] == [2 + 1, 2]            # s2 and s1
    lines = [{"urgency": "routine", "tasks": 3, "ack_median_min": 30.0,
              "complete_median_h": 20.0},
             {"urgency": "urgent", "tasks": 1, "ack_median_min": 5.0,
              "complete_median_h": None}]
    option = turnaround_option(lines, "zh")
    assert option["xAxis"]["data"] == ["加急 (1)", "常规 (3)"]     # most urgent first
    assert option["series"][0]["data"] == [5.0, 30.0]
    assert option["series"][1]["data"] == [None, 20.0]


# ------------------------------------------------------------------------------ over HTTP


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found[1]


def _client(gateway, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=60,
                             cookies={"fed_session": token})


@pytest.fixture
async def admin(gateway):
    token = await asyncio.to_thread(admin_token, gateway, user="admin-qian")
    async with _client(gateway, token) as http:
        yield http


async def test_the_overview_lists_every_site_in_its_tree_with_its_node(
        gateway, start_nodes, admin) -> None:
    await start_nodes(gateway, "county-a")
    answer = await admin.get("/console/admin")
    assert answer.status_code == 200, answer.text[:500]
    page = html.unescape(answer.text)
    sites = {s.site_id: s for s, _ in gateway.store.consortium_view()}
    assert sites
    for site_id in sites:
        assert f'data-site="{site_id}"' in page
    health = page[page.index('id="health"'):page.index('id="quality"')]
    assert 'hx-get="/console/admin/details" hx-trigger="load"' in page
    assert re.search(r'data-site="county-a" data-state="online"', health)
    offline = next(s for s in sites if s != "county-a")
    assert re.search(rf'data-site="{offline}" data-state="none"', health)
    # the tree: a county comes after its city and before the next city's counties
    order = re.findall(r'<tr data-site="([^"]+)" data-state', health)
    for site_id, site in sites.items():
        if site.parent_site_id in sites:
            assert order.index(site.parent_site_id) < order.index(site_id)
    # polled; the sync position and outbox backlog are the store's (0 queued for any)
    assert 'hx-get="/console/admin/health"' in health and "every 5s" in health
    assert "Traceback" not in page
    # the slower parts follow: each site's data quality (a node that did not answer says
    # so) and the EMPI's counts, swapped into their card out of band
    details = html.unescape((await admin.get("/console/admin/details")).text)
    assert re.search(r'data-site="county-a" data-quality="reported"', details)
    assert re.search(rf'data-site="{offline}" data-quality="silent"', details)
    assert 'id="empi-counts" hx-swap-oob="true"' in details
    assert 'data-count="persons"' in details and "<html" not in details


async def test_the_health_fragment_is_a_fragment_that_polls_itself(gateway, admin) -> None:
    answer = await admin.get("/console/admin/health?lang=en")
    assert answer.status_code == 200
    assert "<html" not in answer.text and "<section id=\"health\"" in answer.text
    assert 'hx-trigger="every 5s"' in answer.text
    assert "Sites and nodes" in answer.text


async def test_the_exchange_dashboard_draws_its_charts(gateway, admin) -> None:
    answer = await admin.get("/console/admin/exchanges?days=7")
    assert answer.status_code == 200, answer.text[:500]
    page = answer.text
    assert 'id="chart-volume"' in page or "没有机构间交换" in page
    assert "echarts.min.js" in page
    # the admin's own page views are exchanges: after a few, the volume chart has data
    bad = await admin.get("/console/admin/exchanges?days=1000")
    assert bad.status_code == 400
    assert 'data-field="days"' in bad.text and 'aria-invalid="true"' in bad.text


async def test_the_audit_search_finds_a_sites_exchanges_and_shows_bad_dates_at_the_field(
        gateway, pki, admin) -> None:
    doctor = await asyncio.to_thread(staff_token, gateway, pki, site="county-a",
                                     user="dr-wang")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 headers={"Authorization": f"Bearer {doctor}"}) as api:
        assert (await api.get("/api/consortium")).status_code == 200
    answer = await admin.get("/console/admin/audit", params={"site": "county-a",
                                                            "who": "dr-wang"})
    assert answer.status_code == 200, answer.text[:500]
    found = re.findall(r'<tr data-operation="([^"]+)" data-requester-site="([^"]*)"',
                       answer.text)
    assert found and all(site == "county-a" for _, site in found), found
    # a site that exchanged nothing: nothing found, and said so
    nothing = await admin.get("/console/admin/audit", params={"site": "county-b",
                                                             "who": "dr-wang"})
    assert "data-empty" in nothing.text
    # bad dates: the field's error, in the page, the other fields kept
    bad = await admin.get("/console/admin/audit", params={"since": "2026-13-45",
                                                         "site": "county-a"})
    assert bad.status_code == 400
    page = html.unescape(bad.text)
    assert 'data-field="since"' in page and "YYYY-MM-DD" in page
    assert 'id="f-since" name="since" value="2026-13-45"' in page
    assert re.search(r'<option value="county-a"\s+selected', page)
    backwards = await admin.get("/console/admin/audit", params={"since": "2026-11-20",
                                                               "until": "2026-11-10"})
    assert backwards.status_code == 400 and 'data-field="since"' in backwards.text
    # the anomalies follow the page, for the days searched (the last week when wrong)
    assert 'hx-get="/console/admin/audit/anomalies" hx-trigger="load"' in backwards.text
    days = await admin.get("/console/admin/audit", params={"since": "2026-11-01",
                                                          "until": "2026-11-08"})
    assert 'hx-get="/console/admin/audit/anomalies?since=2026-11-01&amp;until=2026-11-08"' \
        in days.text
    week = await admin.get("/console/admin/audit/anomalies")
    assert week.status_code == 200 and 'id="anomalies" data-loaded="true"' in week.text
    assert "<html" not in week.text and "data-problem" not in week.text
    wrong = await admin.get("/console/admin/audit/anomalies",
                            params={"since": "2026-11-20", "until": "2026-11-10"})
    assert 'data-problem="400"' in wrong.text
    unknown = await admin.get("/console/admin/audit", params={"patient": "no-such-person"})
    assert unknown.status_code == 400 or 'data-field="patient"' in unknown.text \
        or "data-empty" in unknown.text
    assert "Traceback" not in unknown.text


async def test_verify_now_verifies_the_log_and_says_so(gateway, admin) -> None:
    page = await admin.get("/console/admin/audit")
    assert page.status_code == 200
    assert 'data-verified="none"' in page.text
    token = _csrf(page.text)
    # htmx: the verification card comes back, verified
    card = await admin.post("/console/admin/audit/verify", data={"csrf": token},
                            headers={"HX-Request": "true"})
    assert card.status_code == 200, card.text[:500]
    assert 'data-verified="ok"' in card.text and "<html" not in card.text
    # a plain form: back to the page, which now shows the kept result
    plain = await admin.post("/console/admin/audit/verify", data={"csrf": token})
    assert plain.status_code == 303
    again = await admin.get(plain.headers["location"])
    assert 'data-verified="ok"' in again.text
    # without the CSRF token nothing runs
    forged = await admin.post("/console/admin/audit/verify", data={"csrf": "forged"})
    assert forged.status_code == 403


async def test_an_auditor_opens_the_audit_page_but_not_the_empi_queue(gateway) -> None:
    token = await asyncio.to_thread(admin_token, gateway, user="auditor-sun",
                                    roles=("auditor",), purpose="HCOMPL")
    async with _client(gateway, token) as http:
        assert (await http.get("/console/admin/audit")).status_code == 200
        refused = await http.get("/console/admin/empi")
        assert refused.status_code == 403 and 'data-status="403"' in refused.text


BORN = dt.date(1968, 4, 12)


def _namesakes(gateway) -> tuple[str, int]:
    """Two 张伟 born the same day at two sites, nothing else shared: the EMPI cannot
    decide and leaves one review item."""
    empi = gateway.identity
    wei = {"name": "张伟", "sex": "male", "birth_date": BORN.isoformat(),
           "phone": "13812345678", "address": "青岚市东阳县石门镇上坪村12号"}
    first = empi.link("county-a", "n1", wei)
    empi.link("city-1", "n2", {**wei, "phone": "13900001111",
                               "address": "青岚市城关区人民路88号"})
    [item] = empi.review_queue()
    return str(first.person_id), item.id


async def test_the_administrator_compares_a_pair_and_links_it(gateway, admin) -> None:
    first, item_id = await asyncio.to_thread(_namesakes, gateway)
    queue = await admin.get("/console/admin/empi")
    assert f'<tr data-item="{item_id}">' in queue.text
    answer = await admin.get(f"/console/admin/empi/{item_id}")
    assert answer.status_code == 200, answer.text[:500]
    page = html.unescape(answer.text)
    # side by side: both records' values, each field's weight, the total
    row = re.search(r'<tr data-field="family">(.*?)</tr>', page, re.S)[1]
    assert row.count("张 (zhang)") == 2
    weights = [float(w) for w in re.findall(r'data-weight="(-?[\d.]+)"', page)]
    assert len(weights) == 9 and any(w > 0 for w in weights) and any(w < 0 for w in weights)
    total = float(re.search(r'data-total-weight="(-?[\d.]+)"', page)[1])
    prior = float(re.search(r"先验</th>.*?([+-][\d.]+)</td>", page, re.S)[1])
    assert total == pytest.approx(prior + sum(weights), abs=0.05)
    linked = await admin.post(f"/console/admin/empi/{item_id}/accept",
                              data={"csrf": _csrf(page)})
    assert linked.status_code == 303
    assert linked.headers["location"] == f"/console/admin/empi?done=accepted&item={item_id}"
    after = await admin.get(linked.headers["location"])
    assert 'data-done="accepted"' in after.text and f'data-item="{item_id}"' not in after.text
    assert await asyncio.to_thread(gateway.identity.person_of, RecordRef("city-1", "n2")) \
        == await asyncio.to_thread(gateway.identity.person_of, RecordRef("county-a", "n1"))
    # decided once: a second decision is refused in the page, nothing changes
    again = await admin.post(f"/console/admin/empi/{item_id}/reject",
                             data={"csrf": _csrf(page)})
    assert again.status_code == 409 and "data-error" in again.text
    assert "Traceback" not in again.text
    # linked wrongly after all: split the record off again, from the same comparison
    now_linked = html.unescape((await admin.get(f"/console/admin/empi/{item_id}")).text)
    assert 'name="record_id" value="n2"' in now_linked
    split = await admin.post(f"/console/admin/empi/{item_id}/split",
                             data={"csrf": _csrf(page), "site_id": "city-1",
                                   "record_id": "n2"})
    assert split.status_code == 303 and "done=split" in split.headers["location"]
    assert await asyncio.to_thread(gateway.identity.person_of, RecordRef("city-1", "n2")) \
        != await asyncio.to_thread(gateway.identity.person_of, RecordRef("county-a", "n1"))


async def test_reject_and_split_from_the_comparison(gateway, admin) -> None:
    _, item_id = await asyncio.to_thread(_namesakes, gateway)
    page = (await admin.get(f"/console/admin/empi/{item_id}")).text
    token = _csrf(page)
    # a record that is not one of the pair cannot be split from here
    stray = await admin.post(f"/console/admin/empi/{item_id}/split",
                             data={"csrf": token, "site_id": "county-b", "record_id": "zz"})
    assert stray.status_code == 400 and "data-error" in stray.text
    before = await asyncio.to_thread(gateway.identity.person_of, RecordRef("city-1", "n2"))
    kept_apart = await admin.post(f"/console/admin/empi/{item_id}/reject",
                                  data={"csrf": token})
    assert kept_apart.status_code == 303 and "done=rejected" in kept_apart.headers["location"]
    assert 'name="record_id"' not in (await admin.get(f"/console/admin/empi/{item_id}")).text
    # a record alone in its person has nothing to be split from: said in the page
    alone = await admin.post(f"/console/admin/empi/{item_id}/split",
                             data={"csrf": token, "site_id": "city-1", "record_id": "n2"})
    assert alone.status_code == 409 and "data-error" in alone.text
    assert await asyncio.to_thread(gateway.identity.person_of,
                                   RecordRef("city-1", "n2")) == before
    forged = await admin.post(f"/console/admin/empi/{item_id}/accept", data={"csrf": "x"})
    assert forged.status_code == 403


async def test_the_empi_queue_and_an_item_that_is_not_there(gateway, admin) -> None:
    queue = await admin.get("/console/admin/empi")
    assert queue.status_code == 200, queue.text[:500]
    assert "data-empty" in queue.text or "review-queue" in queue.text
    missing = await admin.get("/console/admin/empi/999999")
    assert missing.status_code == 404 and 'data-status="404"' in missing.text
    bad = await admin.get("/console/admin/empi/not-a-number")
    assert bad.status_code == 400 and 'data-status="400"' in bad.text
    token = _csrf(queue.text)
    nonsense = await admin.post("/console/admin/empi/1/merge-everything",
                                data={"csrf": token})
    assert nonsense.status_code == 404


async def test_a_doctor_gets_the_403_page_on_every_admin_page(gateway, pki) -> None:
    token = await asyncio.to_thread(staff_token, gateway, pki, site="county-a",
                                    user="dr-wang")
    async with _client(gateway, token) as http:
        csrf = _csrf((await http.get("/console/signin")).text)
        for path in ADMIN_PAGES:
            answer = await http.get(path)
            assert answer.status_code == 403, (path, answer.status_code)
            assert 'data-status="403"' in answer.text and "无权访问" in answer.text, path
        for path in ADMIN_POSTS:
            answer = await http.post(path, data={"csrf": csrf})
            assert answer.status_code == 403 and 'data-status="403"' in answer.text, path
