"""A referral gives its target site a care relationship with the person in the regional
archive (and a care episode for critical-result alerts); a rejected one does not."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from federation.archive.care import CareContext
from federation.referral.moves import Details
from federation.workflow.care import WorkflowCare, WorkflowEpisodes
from tests.conftest import bearer, staff_token
from tests.referral.conftest import upward

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _ctx(up) -> CareContext:
    gw = up.gateway
    return CareContext(gw.store.engine, gw.archive, lambda _pid: [], 365)


async def test_an_open_referral_lets_the_target_read_and_be_alerted(up):
    # a county-a patient the city may not read yet (no encounter there, no referral)
    ctx = _ctx(up)
    city = await asyncio.to_thread(staff_token, up.gateway, up.pki, site="city-1",
                                   user="dr.qian")
    base = f"http://127.0.0.1:{up.gateway.http_port}"
    chosen = None
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for patient in up.linked("county-a"):
            person = await asyncio.to_thread(_person, up, patient)
            if person is None or "city-1" in await asyncio.to_thread(
                    WorkflowCare(ctx, "referral").sites_caring_for, person):
                continue
            refused = await http.get(f"/fhir/Patient/{person}/$everything",
                                     headers=bearer(city))
            if refused.status_code == 403:
                chosen = (patient, person)
                break
        assert chosen, "every county-a patient already has a relationship with the city"
        patient, person = chosen
        made, _ = await up.client("dr-wang").create(upward(patient))
        sites = await asyncio.to_thread(WorkflowCare(ctx, "referral").sites_caring_for, person)
        assert {"county-a", "city-1"} <= sites
        episodes = await asyncio.to_thread(WorkflowEpisodes(ctx, "referral").open_episodes,
                                           person)
        assert {(e.site_id, e.ref) for e in episodes} >= {
            ("county-a", f"Task/{made.id}"), ("city-1", f"Task/{made.id}")}
        allowed = await http.get(f"/fhir/Patient/{person}/$everything", headers=bearer(city))
        assert allowed.status_code == 200, allowed.text

        # the city rejects it: the relationship the referral gave ends with it
        await up.client("dr-li").act(made.id, "reject", Details(reason_code="out-of-scope"))
        sites = await asyncio.to_thread(WorkflowCare(ctx, "referral").sites_caring_for, person)
        assert "city-1" not in sites
        assert not [e for e in await asyncio.to_thread(
            WorkflowEpisodes(ctx, "referral").open_episodes, person) if e.ref == f"Task/{made.id}"]


def _person(up, patient: str) -> str | None:
    from sqlalchemy import text
    with up.gateway.store.engine.connect() as conn:
        return conn.execute(text("SELECT person_id FROM identity_record WHERE site_id = "
                                 "'county-a' AND record_id = :r"), {"r": patient}).scalar()
