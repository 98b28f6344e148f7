"""Issue 9's story, start to end, in Debian's Chromium against the demo consortium, with
each person in their own browser context at the same time:

a county doctor finds a patient and sends an upward referral; a city specialist, with
"my referrals" open, sees it arrive without reloading; the specialist claims an ECG
consult from the pool inbox, views the ECG and signs the report in the browser; the
county doctor sees the signed result; a regional administrator finds these exchanges in
the audit search and verifies the log.

Plain (sync) tests only: the module's browser keeps Playwright's event loop running.
"""

from __future__ import annotations

from federation.synth.studies import write_ecg_study
from tests.console.test_doctor_browser import (
    _multi_site_person,
    choose_urgent_cardiology_at_the_city,
)
from tests.console.test_specialist_browser import _demo_call


def test_referral_consult_result_and_audit_across_three_people(demo_consortium,
                                                               signed_in) -> None:
    demo = demo_consortium
    url = demo.url
    _, sites, record = _multi_site_person(demo)
    wang_account = demo.account("doctor", "county")
    li_account = demo.account("specialist", "city")

    # the city specialist has "my referrals" open, and keeps it open
    li = signed_in(li_account)
    li.goto(f"{url}/console/referrals")
    li.evaluate("window.__stayed = true")

    # the county doctor finds the patient by ID number and refers them upward
    wang = signed_in(wang_account)
    wang.fill("#q", record.resident_id)
    wang.click("#patient-search button[type=submit]")
    row = wang.locator("tr[data-person]")
    assert row.count() == 1
    person_id = row.get_attribute("data-person")
    wang.goto(f"{url}/console/referrals/new?person={person_id}")
    choose_urgent_cardiology_at_the_city(wang)
    wang.fill("#reason_code", "I20.0")
    wang.fill("#reason_text", "不稳定型心绞痛")
    wang.select_option("#consent_method", "written")
    wang.select_option("#consent_by", "patient")
    wang.click("#send-referral")
    wang.wait_for_url("**/console/referrals?sent=*")
    task_id = wang.url.rpartition("sent=")[2]

    # … and it arrives on the specialist's open page, no reload
    arrived = li.locator(f'#referrals-received tr[data-referral="{task_id}"]')
    arrived.wait_for(timeout=30_000)
    assert li.evaluate("window.__stayed === true")
    assert arrived.locator(f"#status-{task_id}").get_attribute("data-status") == \
        "awaiting-triage"

    # an ECG consult: the doctor asks (the API, as the county's systems would), the
    # specialist claims it from the pool inbox, views the ECG and signs the report
    patient = demo.linked_record("county-a", nth=2)
    write_ecg_study(demo.layout.workdir / "studies" / "county-a", "ecg-story-1", patient)
    wang_token = demo.token(wang_account)
    li.goto(f"{url}/console/consults")
    consult = _demo_call(demo, "POST", "/api/consults", wang_token, {
        "patient_id": patient, "kind": "ecg", "question": "心悸，请判读12导联心电图",
        "urgency": "urgent", "consent": "written", "study_ids": ["ecg-story-1"]})["id"]
    inbox_row = li.locator(f'#pool-table tr[data-consult="{consult}"]')
    inbox_row.wait_for(timeout=30_000)
    inbox_row.locator('button[data-action="claim"]').click()
    li.wait_for_url(f"**/console/consults/{consult}")
    li.locator('.ecg-chart[data-drawn="true"]').wait_for(timeout=30_000)
    pki = demo.layout.workdir / "pki" / li_account.user
    li.fill("#conclusion", "窦性心律，偶发房性早搏")
    li.fill('.code-row >> nth=0 >> input[name="code"]', "284470004")
    li.fill('.code-row >> nth=0 >> input[name="display"]', "Premature atrial contraction")
    li.set_input_files("#key", str(pki / f"{li_account.user}.key"))
    li.set_input_files("#certificate", str(pki / f"{li_account.user}.crt"))
    li.click("#sign-send")
    li.wait_for_url("**signed=report", timeout=30_000)

    # the county doctor sees the signed result
    wang.goto(f"{url}/console/consults/{consult}")
    assert wang.locator('[data-verify="valid"]').count() == 1
    assert "Premature atrial contraction" in wang.locator(".report-version").inner_text()
    assert "窦性心律" in wang.locator(".report-version").inner_text()

    # the regional administrator finds these exchanges and verifies the log
    admin = signed_in(demo.account("regional-admin"))
    admin.goto(f"{url}/console/admin/audit")
    admin.select_option("#f-site", "county-a")
    for operation, expected in (("Referrals/*", "Referrals/Create"),
                                ("Consults/*", "Consults/Request")):
        admin.fill("#f-operation", operation)
        admin.click(".audit-search button[type=submit]")
        admin.wait_for_load_state("networkidle")
        found = admin.locator("table.events").inner_text()
        assert expected in found, found[:2000]
    admin.click("#verify-now")
    admin.wait_for_selector('#verification[data-verified="ok"]', timeout=60_000)
    assert sites  # the patient was known at several sites (the finder's premise)
