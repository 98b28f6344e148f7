"""The referral's other surfaces on a running gateway: FHIR search and read over HTTP
(search semantics, paging, OperationOutcomes) and the ``federation referral`` CLI with a
person certificate."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import pytest_asyncio
from click.testing import CliRunner
from fhir.resources.R4B.bundle import Bundle

from federation.cli import cli
from federation.referral.moves import Details
from tests.conftest import admin_token, bearer, staff_token
from tests.referral.conftest import upward

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def http(up):
    return f"http://127.0.0.1:{up.gateway.http_port}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(up):
    """A regional administrator's token: sees every site's referrals (fetched off the
    event loop that serves the gateway)."""
    return bearer(await asyncio.to_thread(admin_token, up.gateway, user="ra.zhou",
                                          purpose="HOPERAT"))


_HEADERS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _signed_in(admin):
    _HEADERS.clear()
    _HEADERS.update(admin)


async def _get(url: str, headers: dict[str, str] | None = None, **params) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, params=params or None,
                                headers=_HEADERS if headers is None else headers)


async def test_fhir_task_search_with_semantics_and_paging(up, http):
    doctor = up.client("dr-wang")
    patient = up.linked("county-a")[1]
    made = [(await doctor.create(upward(patient, department=f"dept-{n}")))[0] for n in range(3)]
    took = await up.client("dr-li").act(made[0].id, "accept",
                                        Details(admission_note="ward 2"))
    person = made[0].person_id

    first = await _get(f"{http}/fhir/Task", patient=person, _count="2",
                       _sort="authored-on")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/fhir+json")
    bundle = first.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] >= 3
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    assert ids[:2] == [made[0].id, made[1].id] or bundle["total"] > 3
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert "next" in links and "previous" not in links
    second = (await _get(links["next"])).json()
    assert "previous" in {link["relation"] for link in second["link"]}
    assert not set(ids) & {e["resource"]["id"] for e in second["entry"]}

    accepted = (await _get(f"{http}/fhir/Task", status="accepted",
                           owner="Organization/city-1", patient=person)).json()
    assert [e["resource"]["id"] for e in accepted["entry"]] == [made[0].id]
    either = (await _get(f"{http}/fhir/Task", status="accepted,requested",
                         requester="county-a", patient=person)).json()
    assert {made[0].id, made[1].id, made[2].id} <= {e["resource"]["id"] for e in either["entry"]}
    by_record = (await _get(f"{http}/fhir/Task", patient=f"Patient/{patient}",
                            **{"_id": made[2].id})).json()
    assert [e["resource"]["id"] for e in by_record["entry"]] == [made[2].id]
    by_identifier = (await _get(f"{http}/fhir/Task", **{
        "patient:identifier": f"urn:federation:empi:person|{person}", "status": "accepted"}))
    assert by_identifier.json()["total"] >= 1

    task = await _get(f"{http}/fhir/Task/{made[0].id}")
    assert task.json()["businessStatus"]["text"] == "accepted"
    assert int(task.json()["meta"]["versionId"]) >= took.version
    sr = (await _get(f"{http}/fhir/ServiceRequest", status="active", performer="city-1",
                     patient=person)).json()
    Bundle.model_validate(sr)
    assert made[0].id in {e["resource"]["id"] for e in sr["entry"]}
    one = (await _get(f"{http}/fhir/ServiceRequest/{made[1].id}")).json()
    assert one["resourceType"] == "ServiceRequest" and one["performerType"]["text"] == "dept-1"


@pytest.mark.parametrize("params,message", [
    ({"owner": "Practitioner/x"}, "owner must be Organization"),
    ({"status": "approved"}, "not a FHIR task-status"),
    ({"_count": "0"}, "_count must be"),
    ({"_sort": "name"}, "_sort must be"),
    ({"subject": "x"}, "parameter 'subject' is not supported"),
    ({"_tag": "x|y"}, "_tag supports only"),
    ({"patient:identifier": "urn:x|1"}, "patient:identifier must be"),
])
async def test_bad_searches_are_operation_outcomes(up, http, params, message):
    response = await _get(f"{http}/fhir/Task", **params)
    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert message in body["issue"][0]["diagnostics"]


async def test_sites_see_only_their_own_referrals(up, http):
    made, _ = await up.client("dr-wang").create(upward(up.linked("county-a")[3]))
    township = bearer(await asyncio.to_thread(staff_token, up.gateway, up.pki,
                                              site="township-a1", user="nurse.he",
                                              roles=("nurse",)))
    city = bearer(await asyncio.to_thread(staff_token, up.gateway, up.pki, site="city-1",
                                          user="dr.qian"))
    assert (await _get(f"{http}/fhir/Task/{made.id}", township)).status_code == 404
    seen = (await _get(f"{http}/fhir/Task", township, _id=made.id)).json()
    assert seen["total"] == 0
    assert (await _get(f"{http}/fhir/Task/{made.id}", city)).status_code == 200
    assert (await _get(f"{http}/fhir/Task/{made.id}", {})).status_code == 401


async def test_unknown_referral_is_404(up, http):
    for path in ("Task", "ServiceRequest"):
        response = await _get(f"{http}/fhir/{path}/ref-nope")
        assert response.status_code == 404 and response.json()["resourceType"] == \
            "OperationOutcome"


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "160"}).invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


async def test_cli_for_a_doctor(up):
    wang = ["--gateway", up.address, "--credentials", str(up.pki.root / "dr-wang")]
    li = ["--gateway", up.address, "--credentials", str(up.pki.root / "dr-li")]
    patient = up.linked("county-a")[2]
    code, out = await asyncio.to_thread(
        _cli, "referral", "create", patient, "--to", "city-1", "--department", "neurology",
        "--urgency", "urgent", "--reason-code", "I63.9", "--reason", "脑梗死", *wang)
    assert code == 2 and "consent" in out and "nothing was sent" in out
    code, out = await asyncio.to_thread(
        _cli, "referral", "create", patient, "--to", "city-1", "--department", "neurology",
        "--urgency", "urgent", "--reason-code", "I63.9", "--reason", "脑梗死",
        "--consent", "written", *wang)
    assert code == 0, out
    ref_id = re.search(r"referral (ref-[0-9a-f]+) sent to city-1", out).group(1)
    code, out = await asyncio.to_thread(_cli, "referral", "list", "--status", "requested",
                                        "--per-page", "200", *li)
    assert code == 0 and ref_id in out and "neurology" in out
    code, out = await asyncio.to_thread(_cli, "referral", "accept", ref_id, "--appointment",
                                        "2030-01-02 09:30", *li)
    assert code == 0 and "booked" in out, out
    code, out = await asyncio.to_thread(_cli, "referral", "accept", ref_id, "--admission",
                                        "x", *li)
    assert code == 2 and "cannot accept" in out
    code, out = await asyncio.to_thread(_cli, "referral", "start", ref_id, *li)
    assert code == 0
    code, out = await asyncio.to_thread(_cli, "referral", "complete", ref_id, "--result",
                                        "thrombolysis; recovered", *li)
    assert code == 0 and "result-sent" in out
    code, out = await asyncio.to_thread(_cli, "referral", "show", ref_id, *wang)
    assert code == 0 and "History" in out and "complete" in out and "Deliveries" in out
    code, out = await asyncio.to_thread(_cli, "referral", "turnaround", *li)
    assert code == 0 and "city-1" in out and "neurology" in out
    code, out = await asyncio.to_thread(_cli, "referral", "show", ref_id, "--credentials",
                                        str(up.pki.root / "dr-ma"), "--gateway", up.address)
    assert code == 2 and "does not exist" in out
