"""Research export (FHIR Bulk Data $export) of a de-identified cohort: only for a regional
administrator with purpose HRESCH; no direct identifier or free text in the NDJSON; dates
shifted by one offset per person; the job is in the store, so a second replica answers
its status and serves its files."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest

from federation.archive.deid import Deidentifier
from federation.gateway.app import start_gateway
from tests.archive.conftest import (
    NOW,
    WEI,
    bearer,
    condition,
    document,
    encounter,
    lab,
    medication,
    patient,
    put,
    token,
)
from tests.conftest import admin_token

D = dt.timedelta
NA = {"name": "李娜", "family": "李", "given": "娜", "nid": "310104199203030029",
      "phone": "13900139000", "birth": "1992-03-03", "gender": "female"}
SECRETS = [WEI["name"], WEI["nid"], WEI["phone"], "石门镇", "左侧中央型肺鳞癌", "出院小结",
           "氨氯地平", "L1", "A1", NA["name"], NA["nid"], NA["phone"]]


@pytest.fixture
async def seeded(gateway):
    e_start = dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.timezone(D(hours=8)))
    await put(gateway, "city-1", patient("city-1", "pc"),
              encounter("city-1", "e-c1", "pc", e_start),
              lab("city-1", "o-c1", "pc", "2823-3", 4.1, "mmol/L", e_start + D(hours=2)),
              condition("city-1", "c-c1", "pc", "C34.9", e_start),
              medication("city-1", "m-c1", "pc", e_start),
              document("city-1", "d-c1", "pc", e_start))
    await put(gateway, "county-a", patient("county-a", "pa", local="A1"),
              encounter("county-a", "e-a1", "pa", NOW - D(days=5)),
              lab("county-a", "o-a1", "pa", "718-7", 120, "g/L", NOW - D(days=5)))
    await put(gateway, "county-b", patient("county-b", "pb", NA, local="B1"),
              condition("county-b", "c-b1", "pb", "I10", NOW - D(days=3)))
    return gateway.archive_service.people.resolve("pc").person_id


async def _poll(http, url, auth) -> dict:
    for _ in range(200):
        reply = await http.get(url, headers=auth)
        if reply.status_code == 200:
            return reply.json()
        assert reply.status_code == 202 and reply.headers["x-progress"] in ("accepted",
                                                                             "running")
        await asyncio.sleep(0.05)
    raise AssertionError("the export did not finish")


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def test_export_of_a_cohort_is_deidentified(gateway, seeded, pki, tmp_path):
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        # a regional administrator is a consortium account (password grant), not site staff
        admin = bearer(await asyncio.to_thread(admin_token, gateway, user="admin.zhao",
                                               purpose="HRESCH", scopes=("user/*.read",)))
        doctor = bearer(await token(http, pki, "city-1"))
        kick = "/fhir/Patient/$export?cohort-condition=C34"
        assert (await http.get(kick, headers=doctor | {"Prefer": "respond-async"})
                ).status_code == 403
        assert (await http.get(kick, headers=admin)).status_code == 400       # no Prefer
        bad = await http.get(kick + "&_since=2020", headers=admin | {"Prefer": "respond-async"})
        assert bad.status_code == 400 and "_since" in bad.text
        started = await http.get(kick, headers=admin | {"Prefer": "respond-async"})
        assert started.status_code == 202
        manifest = await _poll(http, _path(started.headers["content-location"]), admin)
        assert manifest["requiresAccessToken"] is True
        files = {}
        for out in manifest["output"]:
            reply = await http.get(_path(out["url"]), headers=admin)
            assert reply.headers["content-type"].startswith("application/fhir+ndjson")
            lines = [json.loads(x) for x in reply.text.splitlines() if x]
            assert len(lines) == out["count"]
            files[out["type"]] = lines
        assert (await http.get(_path(manifest["output"][0]["url"]), headers=doctor)
                ).status_code == 403
        # the same job, seen from a second replica on the same database
        second = await start_gateway(replace(gateway.settings))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{second.http_port}") as h2:
                again = (await h2.get(_path(started.headers["content-location"]),
                                      headers=admin)).json()
                assert [o["count"] for o in again["output"]] == [
                    o["count"] for o in manifest["output"]]
                body = await h2.get(_path(again["output"][0]["url"]), headers=admin)
                assert body.status_code == 200 and body.text
        finally:
            await second.stop(0.2)

    blob = json.dumps(files, ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in blob, secret
    assert "identifier" not in blob and '"text"' not in blob and "telecom" not in blob
    # the cohort: Wang Wei (C34.9 at city-1) with his county-a record; not Li Na
    assert len(files["Patient"]) == 1
    key = hashlib.sha256(b"federation-deid:" + pki.tls("gateway").key.read_bytes()).digest()
    deid = Deidentifier(key)
    person = seeded
    pseudonym = deid.pseudonym("person:" + person)
    assert files["Patient"][0]["id"] == pseudonym
    shift = D(days=deid.shift_days(person))
    assert files["Patient"][0]["birthDate"] == (dt.date(1980, 5, 12) + shift).isoformat()
    enc = {e["id"]: e for e in files["Encounter"]}
    city_enc = enc[deid.pseudonym("city-1/Encounter/e-c1")]
    assert city_enc["period"]["start"] == (dt.date(2024, 3, 1) + shift).isoformat() + \
        "T09:30:00+08:00"
    original_a = (NOW - D(days=5))
    county_enc = enc[deid.pseudonym("county-a/Encounter/e-a1")]
    assert county_enc["period"]["start"] == (original_a + shift).isoformat()
    for res in [r for rs in files.values() for r in rs if r["resourceType"] != "Patient"]:
        ref = (res.get("subject") or res.get("patient"))["reference"]
        assert ref == f"Patient/{pseudonym}"                   # both sites' records link
    obs = {o["id"]: o for o in files["Observation"]}
    shifted = obs[deid.pseudonym("city-1/Observation/o-c1")]["effectiveDateTime"]
    assert dt.datetime.fromisoformat(shifted) - dt.datetime.fromisoformat(
        city_enc["period"]["start"]) == D(hours=2)             # intervals kept exactly
    everything = gateway.store.list_exchanges(limit=200)
    rows = [r for r in everything if r.operation == "Archive/$export"]
    assert any("kick-off" in r.detail for r in rows)
    # the doctor's two attempts were refused by the authorisation matrix, and logged
    refused = [r for r in everything if r.outcome == "refused" and "$export" in r.operation]
    assert len(refused) == 2 and all(r.requester_site == "city-1" for r in refused)
