"""The doctor's core path in Debian's Chromium against the demo consortium
(``demo_consortium``): dr-wang finds a person known at several sites, refers them upward
to city-1 (a form with bad input first), reads their record with its lab trends drawn,
and watches the referral's status change in "my referrals" when the city acts — without
reloading; break-glass; and a referral's whole loop through the console's pages.

Plain (sync) tests only: the module's browser keeps Playwright's event loop running.
"""

from __future__ import annotations

import csv
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict

import httpx
import pytest

from tests.console.conftest import screenshot
from tests.console.test_doctor_pages import _csrf


def _multi_site_person(demo) -> tuple[str, dict[str, str], object]:
    """The ground truth's person known at most sites including county-a, with their
    county-a record as the site holds it (name, ID number, phone)."""
    from federation.nodes.adapters import open_sources

    layout = demo.layout
    by_person: dict[str, dict[str, str]] = defaultdict(dict)
    with layout.manifest.truth_path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_person[row["person_id"]][row["site_id"]] = row["local_patient_id"]
    specs = {s.site_id: s for s in layout.manifest.sites}
    for person, sites in sorted(by_person.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if "county-a" not in sites or "city-1" not in sites:
            continue
        adapter = open_sources(specs["county-a"].source_settings())
        try:
            record = adapter.get_patient(sites["county-a"])
        finally:
            adapter.close()
        if record is not None and record.resident_id and record.birth_date:
            return person, sites, record
    raise AssertionError("the demo has nobody at county-a and city-1 with an ID number")


def choose_urgent_cardiology_at_the_city(page) -> None:  # noqa: ANN001
    """In the referral form: urgent, to city-1's cardiology — each choice waits for the
    targets and departments the consortium's rules then offer."""
    with page.expect_response("**/console/referrals/new/targets?*"):
        page.select_option("#urgency", "urgent")
    page.wait_for_selector("#target_site option[value='city-1']", state="attached")
    with page.expect_response("**/console/referrals/new/targets?*"):
        page.select_option("#target_site", "city-1")
    page.wait_for_selector("#department option[value='cardiology']", state="attached")
    page.select_option("#department", "cardiology")


def _api_post(demo, token: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{demo.url}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{path}: {exc.code} {exc.read().decode()[:500]}") from None


def test_county_doctor_finds_refers_reads_and_sees_the_status_change_live(
        demo_consortium, signed_in) -> None:
    _, sites, record = _multi_site_person(demo_consortium)
    page = signed_in(demo_consortium.account("doctor", "county-a"))
    assert page.url.endswith("/console/patients")

    # find: the ID number → one person, with every site that knows them
    page.fill("#q", record.resident_id)
    page.click("#patient-search button[type=submit]")
    row = page.locator("tr[data-person]")
    assert row.count() == 1
    shown = {s.get_attribute("data-site") for s in row.locator("[data-site]").all()}
    assert shown >= set(sites) and len(shown) >= 2
    assert record.resident_id not in page.locator("#results").inner_html()   # masked
    row.locator("a.button").click()
    page.wait_for_load_state("networkidle")
    assert "/console/patients/P" in page.url
    record_url = page.url

    # no care relationship yet → the archive's refusal, with the way forward; or, when the
    # site saw the patient recently, the record itself: either way refer from here
    if page.locator("#refused").count():
        assert "care relationship" in page.locator("#refused").inner_text()
        assert page.locator("#break-glass").count() == 1
        page.click("#refer-to-read")
    else:
        page.click("#start-referral")
    page.wait_for_load_state("networkidle")
    assert "/console/referrals/new" in page.url

    # a form with bad input: each error at its field, nothing sent
    page.fill("#reason_code", "胸痛")
    page.click("#send-referral")
    page.wait_for_load_state("networkidle")
    for field in ("target_site", "reason_code", "consent_method", "consent_by"):
        assert page.locator(f'.field-error[data-field="{field}"]').is_visible(), field

    # the rules' targets for an urgent upward referral, then a complete form
    choose_urgent_cardiology_at_the_city(page)
    page.fill("#reason_text", "不稳定型心绞痛")
    page.click("#normalize")
    page.wait_for_function("document.querySelector('#reason_code').value !== '胸痛'")
    page.fill("#reason_code", "I20.0")
    page.select_option("#consent_method", "written")
    page.select_option("#consent_by", "patient")
    page.click("#preview")
    page.wait_for_selector("#packet-preview [data-kind='Patient']")
    page.click("#send-referral")
    page.wait_for_url("**/console/referrals?sent=*")
    task_id = page.url.rpartition("sent=")[2]
    status = page.locator(f"#status-{task_id}")
    assert status.get_attribute("data-status") == "awaiting-triage"

    # the city accepts (its staff, through the API); the list shows it without a reload
    page.evaluate("window.__stayed = true")
    city = demo_consortium.token(demo_consortium.account("specialist", "city"))
    _api_post(demo_consortium, city, f"/api/referrals/{task_id}/accept",
              {"admission_note": "明日上午心内科门诊"})
    page.wait_for_selector(f"#status-{task_id}[data-status='accepted']", timeout=15_000)
    assert page.evaluate("window.__stayed === true")             # the same page, live
    assert "已接收" in page.locator(f"#status-{task_id}").inner_text()

    # the referral made the care relationship: the record opens, its lab trends drawn
    page.goto(record_url)
    page.wait_for_selector(".chart[data-drawn='true'] canvas", timeout=20_000)
    assert page.locator("#refused").count() == 0
    assert page.locator("#timeline [data-site]").count() >= 1
    assert page.locator("#lab-trends .chart[data-drawn='true']").count() >= 1
    screenshot(page, "doctor")

    # the referral's own page: history and what the doctor may do now (only a note or
    # cancel: accepting is the city's move)
    page.goto(f"{demo_consortium.url}/console/referrals/{task_id}")
    actions = {f.get_attribute("data-action") for f in page.locator("form.act").all()}
    assert "accept" not in actions and "note" in actions
    page.locator("form.act[data-action='note'] button").click()
    page.wait_for_load_state("networkidle")
    assert page.locator(".field-error[data-field='note']").is_visible()


def test_break_glass_asks_why_and_the_password_then_reads_once(demo_consortium) -> None:
    person, _, record = _multi_site_person(demo_consortium)
    account = demo_consortium.account("doctor", "township")
    with httpx.Client(base_url=demo_consortium.url, timeout=60) as http:
        signin = http.get("/console/signin")
        http.post("/console/signin", data={"csrf": _csrf(signin.text), "site": account.site,
                                           "username": account.user,
                                           "password": account.password})
        found = http.post("/console/patients", data={"csrf": _csrf(signin.text),
                                                     "q": record.resident_id})
        person_id = re.search(r'data-person="([^"]+)"', found.text)[1]
        before = http.get(f"/console/patients/{person_id}")
        if before.status_code == 200:
            pytest.skip("this township already cares for the person")
        assert before.status_code == 403 and 'id="refused"' in before.text
        url = f"/console/patients/{person_id}/break-glass"
        empty = http.post(url, data={"csrf": _csrf(signin.text)})
        assert empty.status_code == 400
        assert 'data-field="reason"' in empty.text and 'data-field="password"' in empty.text
        wrong = http.post(url, data={"csrf": _csrf(signin.text), "reason": "昏迷送入急诊",
                                     "password": "not it"})
        assert wrong.status_code == 400 and 'data-field="password"' in wrong.text
        read = http.post(url, data={"csrf": _csrf(signin.text), "reason": "昏迷送入急诊",
                                    "password": account.password})
        assert read.status_code == 200, read.text[:500]
        assert 'id="break-glass-notice"' in read.text and 'id="timeline"' in read.text
        # once: the session keeps its own purpose, the next read is refused again
        assert http.get(f"/console/patients/{person_id}").status_code == 403


def _console(demo, user: str) -> tuple[httpx.Client, str]:
    account = next(a for a in demo.accounts if a.user == user)
    http = httpx.Client(base_url=demo.url, timeout=60)
    signin = http.get("/console/signin")
    answer = http.post("/console/signin", data={
        "csrf": _csrf(signin.text), "site": account.signin_site, "username": user,
        "password": account.password})
    assert answer.status_code == 303, answer.text[:300]
    return http, _csrf(signin.text)


def test_a_referral_runs_its_whole_loop_through_the_console(demo_consortium) -> None:
    """Sent by the county, accepted, booked, seen and completed by the city through its
    referral page, the result acknowledged by the county: each page offers only the moves
    the workflow allows then, and a move missing what it needs says so at the field."""
    _, _, record = _multi_site_person(demo_consortium)
    wang, wang_csrf = _console(demo_consortium, "dr-wang")
    li, li_csrf = _console(demo_consortium, "dr-li")
    try:
        found = wang.post("/console/patients", data={"csrf": wang_csrf,
                                                     "q": record.resident_id})
        person_id = re.search(r'data-person="([^"]+)"', found.text)[1]
        sent = wang.post("/console/referrals/new", data={
            "csrf": wang_csrf, "person": person_id, "direction": "upward",
            "urgency": "routine", "target_site": "city-1", "department": "oncology",
            "reason_text": "肺部占位待查", "reason_code": "R91", "consent_method": "verbal",
            "consent_by": "relative", "consent_name": "王五", "request_id": "loop-1"})
        assert sent.status_code == 303, sent.text[:800]
        task_id = sent.headers["location"].rpartition("sent=")[2]
        url = f"/console/referrals/{task_id}"

        def actions(http: httpx.Client) -> set[str]:
            page = http.get(url)
            assert page.status_code == 200, page.text[:500]
            return set(re.findall(r'data-action="([^"]+)"', page.text))

        def act(http: httpx.Client, csrf: str, action: str, **data: str) -> httpx.Response:
            return http.post(f"{url}/{action}", data={"csrf": csrf, **data})

        assert actions(wang) == {"note", "cancel"}
        assert {"accept", "reject", "redirect"} <= actions(li)
        refused = act(li, li_csrf, "reject", reason_text="没有床位")
        assert refused.status_code == 400 and 'data-field="reason_code"' in refused.text
        assert act(li, li_csrf, "accept", admission_note="肿瘤科门诊").status_code == 303
        bad_time = act(li, li_csrf, "book", appointment_start="下周一")
        assert bad_time.status_code == 400 and 'data-field="appointment_start"' in bad_time.text
        assert act(li, li_csrf, "book", appointment_start="2026-12-07T09:30").status_code == 303
        assert act(li, li_csrf, "start").status_code == 303
        empty = act(li, li_csrf, "complete", result_kind="consult-note")
        assert empty.status_code == 400 and 'data-field="result_text"' in empty.text
        done = act(li, li_csrf, "complete", result_kind="consult-note",
                   result_text="CT 示右上肺结节，建议3个月后复查")
        assert done.status_code == 303
        page = wang.get(url).text
        assert "建议3个月后复查" in page and "知情同意：近亲属（王五）" in page
        # the county acknowledges the result (its node may do so first, on delivery)
        deadline = time.monotonic() + 30
        while 'data-status="closed"' not in page and time.monotonic() < deadline:
            if 'data-action="receive-result"' in page:
                act(wang, wang_csrf, "receive-result")
            time.sleep(0.5)
            page = wang.get(url).text
        assert 'data-status="closed"' in page and "已确认收到" in page
        listed = wang.get("/console/referrals").text
        assert f'id="status-{task_id}"' in listed and 'data-status="closed"' in listed
        # a stale form (another person moved first) is a message, not a crash
        stale = act(li, li_csrf, "note", note="补充", expected_version="1")
        assert stale.status_code == 400 and "Traceback" not in stale.text
        assert stale.text.count('role="alert"') >= 1
    finally:
        wang.close()
        li.close()
