"""The regional administrator's pages in Debian's Chromium against the demo consortium:
the overview, the exchange charts drawn, an audit search that finds a doctor's exchanges,
"verify now", and the doctor's 403 page. Plain (sync) tests only: the module's browser
keeps Playwright's event loop running while it is open."""

from __future__ import annotations


def test_the_administrator_sees_the_consortium_at_a_glance(signed_in, demo_consortium
                                                           ) -> None:
    from tests.console.conftest import screenshot

    page = signed_in(demo_consortium.account("regional-admin"))
    assert page.url.endswith("/console/admin")
    health = page.locator("#health")
    for site in demo_consortium.layout.manifest.sites:
        row = health.locator(f'tr[data-site="{site.site_id}"]')
        assert row.count() == 1, site.site_id
        assert row.get_attribute("data-state") == "online", site.site_id
        assert row.locator(".badge.ok[data-state=online]").count() == 1
    # the tree: the city first, every other site indented under it
    first = health.locator("tbody tr").first.get_attribute("data-site")
    assert next(s for s in demo_consortium.layout.manifest.sites
                if s.site_id == first).tier == "city"
    # live-ish: the health table is fetched again within a poll or two, without a reload
    with page.expect_response(lambda r: r.url.endswith("/console/admin/health")
                              and r.status == 200, timeout=12_000):
        pass
    assert page.locator("#health tbody tr").count() == len(demo_consortium.layout.manifest.sites)
    # the slower parts arrive after the page: data quality from every node, EMPI counts
    page.wait_for_selector('#quality[data-loaded="true"]')
    page.wait_for_selector('#empi-counts[data-loaded="true"]')
    assert int(page.locator('[data-count="persons"]').inner_text()) > 0
    assert page.locator('#quality tr[data-quality="reported"]').count() == \
        len(demo_consortium.layout.manifest.sites)
    # the archive has caught up with every site (the fixture waits for it)
    assert health.locator("td .badge.ok", has_text="已同步").count() == \
        len(demo_consortium.layout.manifest.sites)
    screenshot(page, "admin")


def test_the_exchange_dashboard_draws_its_charts_in_the_browser(signed_in, demo_consortium
                                                                ) -> None:
    page = signed_in(demo_consortium.account("regional-admin"))
    page.goto(f"{demo_consortium.url}/console/admin/exchanges?days=7")
    charts = page.locator(".chart[data-chart]")
    assert charts.count() >= 1, page.content()[:3000]
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart[data-chart]')]"
        ".every(el => el.dataset.drawn === 'true' && el.querySelector('canvas'))")
    assert page.locator("#chart-volume").get_attribute("data-drawn") == "true"


def test_the_administrator_finds_a_doctors_exchanges_and_verifies_the_log(
        signed_in, demo_consortium) -> None:
    from federation.demo.signin import bearer_headers, get_json
    from tests.console.conftest import screenshot

    person = demo_consortium.linked_record("county-a", "person_id")
    doctor = bearer_headers(demo_consortium.layout, site="county-a", role="doctor",
                            purpose="TREAT", user="dr-wang")
    assert get_json(demo_consortium.layout, f"/fhir/Person/{person}", headers=doctor)
    page = signed_in(demo_consortium.account("regional-admin"))
    page.goto(f"{demo_consortium.url}/console/admin/audit")
    # the doctor's site: every exchange found involves it
    page.select_option("#f-site", "county-a")
    page.fill("#f-who", "dr-wang-doctor")
    page.click(".audit-search button[type=submit]")
    page.wait_for_load_state("networkidle")
    rows = page.locator("table.events tbody tr")
    assert rows.count() >= 1, page.locator("#events").inner_text()
    for i in range(rows.count()):
        row = rows.nth(i)
        assert "county-a" in (row.get_attribute("data-requester-site"),
                              row.get_attribute("data-target-site"))
    # the person: the doctor's read of them is found by their EMPI person id
    page.fill("#f-who", "")
    page.select_option("#f-site", "")
    page.fill("#f-patient", person)
    page.click(".audit-search button[type=submit]")
    page.wait_for_load_state("networkidle")
    found = page.locator("table.events tbody tr")
    assert found.count() >= 1, page.locator("#events").inner_text()
    assert "dr-wang-doctor" in page.locator("table.events").inner_text()
    # a bad date: said at the field, in the page
    page.fill("#f-since", "2026-02-30")
    page.click(".audit-search button[type=submit]")
    assert page.locator('.field-error[data-field="since"]').is_visible()
    assert page.locator("#f-since").get_attribute("aria-invalid") == "true"
    page.fill("#f-since", "")
    page.click(".audit-search button[type=submit]")
    page.wait_for_load_state("networkidle")
    page.wait_for_selector('#anomalies[data-loaded="true"]')
    # verify now: the card comes back verified, without leaving the page
    page.click("#verify-now")
    page.wait_for_selector('#verification[data-verified="ok"]', timeout=60_000)
    assert page.locator('#verification [data-result="ok"]').is_visible()
    assert int(page.locator("#verification [data-entries]").inner_text()) > 0
    screenshot(page, "audit")


def test_a_doctor_opening_the_administrators_page_sees_the_403_page(signed_in,
                                                                    demo_consortium) -> None:
    page = signed_in(demo_consortium.account("doctor", "county"))
    answer = page.goto(f"{demo_consortium.url}/console/admin")
    assert answer is not None and answer.status == 403
    assert page.locator('.error-page[data-status="403"]').is_visible()
    assert "无权访问" in page.locator(".error-page h1").inner_text()
    assert page.locator(".mainnav a[href='/console/admin']").count() == 0
