"""Consults over the HTTP API with bearer tokens: request, claim, stream a study with a
Range resume, report with a signature made on the specialist's side, ack; bad input gets
an OperationOutcome that says what is wrong."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib

import httpx
import pytest

from federation.consult.report import diagnostic_report, sign_report
from federation.consult.studies import CHUNK_SIZE
from federation.security.signing import Signer
from federation.synth.studies import write_blob_study
from tests.conftest import admin_token, bearer, staff_token

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHUNK = CHUNK_SIZE


async def test_a_consult_over_http(world) -> None:
    gw, pki = world.gateway, world.pki
    patient = world.linked("county-a")[4]
    folder = write_blob_study(world.studies["county-a"], "slide-http-1", patient, 3 * CHUNK + 7)
    doctor = await asyncio.to_thread(staff_token, gw, pki, site="county-a", user="cdr-wang")
    li = await asyncio.to_thread(staff_token, gw, pki, site="city-1", user="csp-li",
                                 roles=("specialist",))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}",
                                 timeout=30) as http:
        bad = await http.post("/api/consults", headers=bearer(doctor),
                              json={"patient_id": patient, "kind": "x-ray", "question": "?"})
        assert bad.status_code == 400
        assert "kind must be one of" in bad.json()["issue"][0]["diagnostics"]
        made = await http.post("/api/consults", headers=bearer(doctor), json={
            "patient_id": patient, "kind": "pathology", "question": "请会诊切片",
            "study_ids": ["slide-http-1"], "consent": "written", "request_id": "http-1"})
        assert made.status_code == 201, made.text
        cid = made.json()["id"]
        again = await http.post("/api/consults", headers=bearer(doctor), json={
            "patient_id": patient, "kind": "pathology", "question": "请会诊切片",
            "study_ids": ["slide-http-1"], "consent": "written", "request_id": "http-1"})
        assert again.status_code == 200 and again.json()["id"] == cid

        inbox = (await http.get("/api/consults", headers=bearer(li))).json()
        assert cid in [e["resource"]["id"] for e in inbox["entry"]]
        nope = await http.post(f"/api/consults/{cid}/grab", headers=bearer(li))
        assert nope.status_code == 400 and "not a consult action" in nope.text
        claimed = await http.post(f"/api/consults/{cid}/claim", headers=bearer(li), json={})
        assert claimed.status_code == 200
        assert claimed.json()["owner"]["identifier"]["value"] == "csp-li"
        lost = await http.post(f"/api/consults/{cid}/claim", headers=bearer(li))
        assert lost.status_code == 409 and "claimed" in lost.json()["issue"][0]["diagnostics"]

        studies = (await http.get(f"/api/consults/{cid}/studies", headers=bearer(li))).json()
        obj = studies["studies"][0]["objects"][0]
        url = f"/api/consults/{cid}/studies/slide-http-1/slide.tif"
        whole = await http.get(url, headers=bearer(li))
        data = (folder / "slide.tif").read_bytes()
        assert whole.content == data and whole.headers["x-object-sha256"] == obj["sha256"]
        tail = await http.get(url, headers=bearer(li) | {"Range": f"bytes={2 * CHUNK}-"})
        assert tail.status_code == 206 and tail.content == data[2 * CHUNK:]
        odd = await http.get(url, headers=bearer(li) | {"Range": "bytes=10-"})
        assert odd.status_code == 400 and "multiple of" in odd.text
        assert hashlib.sha256(whole.content).hexdigest() == obj["sha256"]

        task = (await http.get(f"/api/consults/{cid}", headers=bearer(li))).json()
        subject = task["entry"][0]["resource"]["for"]
        report = diagnostic_report(cid, 1, kind="pathology", conclusion="鳞状细胞癌，中分化",
                                   codes=[], author_site="city-1", author_user="csp-li",
                                   subject=subject, issued=dt.datetime.now(dt.UTC))
        me = pki.material("csp-li")
        signed = sign_report(report, Signer(me.cert_pem, me.key_pem))
        sent = await http.post(f"/api/consults/{cid}/report", headers=bearer(li), json={
            "report": signed.report, "signature": base64.b64encode(signed.signature).decode(),
            "certificate": signed.cert_pem.decode()})
        assert sent.status_code == 200, sent.text
        assert sent.json()["businessStatus"]["text"] == "reported"
        acked = await http.post(f"/api/consults/{cid}/ack", headers=bearer(doctor))
        assert acked.json()["businessStatus"]["text"] == "closed"
        pools = (await http.get("/fhir/PractitionerRole", params={"specialty": "ecg"},
                                headers=bearer(doctor))).json()
        assert [e["resource"]["id"] for e in pools["entry"]] == ["city-1-ecg"]
    admin = await asyncio.to_thread(admin_token, gw, user="consult-admin")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}",
                                 timeout=30) as http:
        lines = (await http.get("/api/consults/turnaround", headers=bearer(admin))).json()
        (pool,) = [line for line in lines["lines"] if line["department"] == "city-1-pathology"]
        assert pool["site_id"] == "city-1" and pool["closed_loop"] >= 1
        assert pool["ack_median_min"] is not None
        alerts = await http.get("/api/consults/alerts", headers=bearer(admin))
        assert alerts.status_code == 200
