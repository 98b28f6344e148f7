"""The specialist in a real browser against the demo consortium: an ECG consult arrives in
the inbox without a reload, is claimed, its 12-lead ECG drawn, the report signed with the
key and certificate files chosen in the page and verified against the CA; a DICOM slice of
an imaging consult is rendered. (Apart from the httpx tests in test_specialist_pages.py:
Playwright's sync API and pytest-asyncio's module loops do not share a module.)"""

from __future__ import annotations

import httpx

from federation.synth.studies import write_dicom_study, write_ecg_study
from tests.conftest import bearer
from tests.console.conftest import screenshot


def _demo_call(demo, method: str, path: str, token: str, body: dict | None = None) -> dict:
    answer = httpx.request(method, demo.url + path, headers=bearer(token), json=body,
                           timeout=60)
    assert answer.status_code < 300, answer.text
    return answer.json()


def test_a_specialist_takes_an_ecg_consult_in_the_browser(signed_in, demo_consortium) -> None:
    from federation.consult.report import verify_bundle

    demo = demo_consortium
    patient = demo.linked_record("county-a", nth=2)
    studies = demo.layout.workdir / "studies" / "county-a"
    write_ecg_study(studies, "ecg-browser-1", patient)
    write_dicom_study(studies, "ct-browser-1", patient, slices=3, size=96)
    wang = demo.token(demo.account("doctor", "county"))
    li_account = demo.account("specialist", "city")
    page = signed_in(li_account)
    assert page.url.endswith("/console/consults")
    page.evaluate("window.__notReloaded = true")

    # dr-wang asks while dr-li's inbox is open: it appears without a reload
    cid = _demo_call(demo, "POST", "/api/consults", wang, {
        "patient_id": patient, "kind": "ecg", "question": "胸痛2小时，请判读12导联心电图",
        "urgency": "urgent", "consent": "written", "study_ids": ["ecg-browser-1"]})["id"]
    row = page.locator(f'#pool-table tr[data-consult="{cid}"]')
    row.wait_for(timeout=20_000)
    assert page.evaluate("window.__notReloaded") is True
    assert row.locator(".countdown").first.inner_text().startswith("剩余")

    row.locator('button[data-action="claim"]').click()
    page.wait_for_url(f"**/console/consults/{cid}")
    chart = page.locator('.ecg-chart[data-drawn="true"]')
    chart.wait_for(timeout=30_000)
    series = page.evaluate("""() => echarts.getInstanceByDom(
        document.querySelector('.ecg-chart')).getOption().series.length""")
    assert series == 12
    page.locator("#material").scroll_into_view_if_needed()
    screenshot(page, "specialist")

    # sign and send: the key and certificate files chosen in the page
    pki = demo.layout.workdir / "pki" / li_account.user
    page.fill("#conclusion", "窦性心律，心率72次/分；未见急性ST-T改变")
    page.fill('.code-row >> nth=0 >> input[name="code"]', "64730000")
    page.fill('.code-row >> nth=0 >> input[name="display"]', "Normal sinus rhythm")
    page.click("#sign-send")                                  # no key chosen yet
    assert page.locator('.field-error[data-field="key"]').is_visible()
    page.set_input_files("#key", str(pki / f"{li_account.user}.key"))
    page.set_input_files("#certificate", str(pki / f"{li_account.user}.crt"))
    page.click("#sign-send")
    page.wait_for_url("**signed=report", timeout=30_000)
    assert page.locator('[data-verify="valid"]').count() == 1
    assert "Normal sinus rhythm" in page.locator(".report-version").inner_text()

    # the report as the requester holds it verifies against the consortium CA
    bundle = _demo_call(demo, "GET", f"/api/consults/{cid}", wang)
    assert bundle["entry"][0]["resource"]["businessStatus"]["text"] == "reported"
    ((report_id, signer),) = verify_bundle(bundle, demo.layout.ca_cert.read_bytes())
    assert (report_id, signer.name, signer.site_id) == (f"{cid}-r1", "dr-li", "city-1")

    # an imaging consult: the DICOM slice is rendered in the page
    li = demo.token(demo.account("specialist", "city"))
    ct = _demo_call(demo, "POST", "/api/consults", wang, {
        "patient_id": patient, "kind": "imaging", "question": "肺结节性质？",
        "consent": "written", "study_ids": ["ct-browser-1"]})["id"]
    _demo_call(demo, "POST", f"/api/consults/{ct}/claim", li, {})
    page.goto(f"{demo.url}/console/consults/{ct}")
    image = page.locator("img.dicom-main")
    page.wait_for_function("""() => { const i = document.querySelector('img.dicom-main');
        return i && i.complete && i.naturalWidth > 0; }""", timeout=30_000)
    assert image.evaluate("i => i.naturalWidth") == 96
    page.locator('.thumbs [data-src]').nth(2).click()
    page.wait_for_function("""() => { const i = document.querySelector('img.dicom-main');
        return i.src.endsWith('ct-003.dcm/view') && i.complete && i.naturalWidth > 0; }""")
