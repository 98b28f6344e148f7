"""Signing a report in the browser: the console's ``sign.js`` run in a real JavaScript
engine (Node.js's WebCrypto, the same API a browser offers) with a key the test PKI
issued as ``federation ca issue --person`` does; the gateway drafts the report, checks the
signature made in JS and accepts it through the existing report route — and refuses a
tampered signature or a report altered after signing, storing nothing."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

import federation
from federation.consult.report import canonical
from federation.errors import IntegrityError
from federation.security.signing import verify_certified_signature
from federation.store.models import ExchangeLog
from tests.conftest import bearer, staff_token

NODE = shutil.which("node")
SIGN_JS = Path(federation.__file__).parent / "console" / "static" / "js" / "sign.js"
HARNESS = Path(__file__).parent / "js" / "sign_harness.mjs"
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (node) to run sign.js")


def js_sign(key_pem: str, payloads: list[bytes]) -> list[dict[str, str]]:
    """[{signature: base64} | {error: message}] from sign.js's signReport, one per payload."""
    done = subprocess.run([NODE or "node", str(HARNESS), str(SIGN_JS)], capture_output=True,
                          text=True, timeout=60, input=json.dumps({
                              "key_pem": key_pem,
                              "to_sign": [base64.b64encode(p).decode() for p in payloads]}))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sec1(key_pem: str) -> str:
    """The same key as SEC1 ("EC PRIVATE KEY"), as `openssl ec` writes it."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def test_sign_js_signs_as_the_gateway_verifies(consult_pki) -> None:
    tls = consult_pki.tls("csp-li")
    key_pem, cert_pem = tls.key.read_text(), tls.cert.read_bytes()
    ca_pem = tls.ca.read_bytes()
    assert "-----BEGIN PRIVATE KEY-----" in key_pem          # the CA writes PKCS#8
    # random payloads: about half of the r and s values have their top bit set and need
    # the DER INTEGER's leading zero, some have leading zero bytes to drop
    payloads = [os.urandom(n) for n in range(1, 41)]
    for pem in (key_pem, sec1(key_pem)):
        for payload, out in zip(payloads, js_sign(pem, payloads), strict=True):
            signer = verify_certified_signature(
                payload, base64.b64decode(out["signature"]), cert_pem, ca_pem,
                dt.datetime.now(dt.UTC), role="person", what="the report",
                whose="a member of staff's")
            assert signer.name == "csp-li"
    with pytest.raises(IntegrityError, match="does not verify"):
        (out,) = js_sign(key_pem, [b"what was signed"])
        verify_certified_signature(b"what was not", base64.b64decode(out["signature"]),
                                   cert_pem, ca_pem, dt.datetime.now(dt.UTC),
                                   role="person", what="the report", whose="a person's")


def test_sign_js_says_what_is_wrong_with_a_key(consult_pki) -> None:
    tls = consult_pki.tls("csp-li")
    key = serialization.load_pem_private_key(tls.key.read_bytes(), password=None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"secret")).decode()
    answers = [js_sign(pem, [b"x"])[0]["error"] for pem in (
        locked, tls.cert.read_text(), "not a key")]
    assert "encrypted" in answers[0]
    assert "CERTIFICATE cannot sign" in answers[1]
    assert "not a PEM private key" in answers[2]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_report_signed_in_js_is_accepted_and_a_tampered_one_refused(world) -> None:
    gw, pki = world.gateway, world.pki
    patient = world.linked("county-a")[7]
    key_pem = pki.tls("csp-li").key.read_text()
    cert_pem = pki.tls("csp-li").cert.read_text()
    doctor, li, sun = await asyncio.gather(*(asyncio.to_thread(
        staff_token, gw, pki, site=site, user=user, roles=roles) for site, user, roles in (
            ("county-a", "cdr-wang", ("doctor",)), ("city-1", "csp-li", ("specialist",)),
            ("city-1", "csp-sun", ("specialist",)))))
    codes = [{"system": "http://snomed.info/sct", "code": "164865005",
              "display": "ST elevation"}]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}",
                                 timeout=60) as http:
        made = await http.post("/api/consults", headers=bearer(doctor), json={
            "patient_id": patient, "kind": "ecg", "question": "胸痛，请判读心电图",
            "consent": "written"})
        cid = made.json()["id"]
        task = (await http.get(f"/api/consults/{cid}", headers=bearer(doctor))
                ).json()["entry"][0]["resource"]
        early = await http.post(f"/api/consults/{cid}/report-draft", headers=bearer(li),
                                json={"conclusion": "x"})
        assert early.status_code == 409                       # not claimed yet
        await http.post(f"/api/consults/{cid}/claim", headers=bearer(li))
        draft_url = f"/api/consults/{cid}/report-draft"
        for bad, words in (({"conclusion": " "}, "conclusion"),
                           ({"conclusion": "x", "codes": "I21"}, "'codes' must be a list"),
                           ({"conclusion": "x", "amend": "yes"}, "'amend' must be")):
            answer = await http.post(draft_url, headers=bearer(li), json=bad)
            assert answer.status_code == 400 and words in answer.text, answer.text
        not_hers = await http.post(draft_url, headers=bearer(sun), json={"conclusion": "x"})
        assert not_hers.status_code == 403 and "assigned to" in not_hers.text

        drafted = await http.post(draft_url, headers=bearer(li), json={
            "conclusion": "窦性心律，下壁ST段抬高", "codes": codes})
        assert drafted.status_code == 200, drafted.text
        draft = drafted.json()
        report = draft["report"]
        assert (report["id"], report["status"], draft["version"]) == (f"{cid}-r1", "final", 1)
        assert report["subject"] == task["for"]
        assert report["performer"][0]["identifier"]["value"] == "csp-li"
        assert report["conclusionCode"][0]["coding"] == codes
        assert base64.b64decode(draft["to_sign"]) == canonical(report)
        assert draft["sig_format"].endswith("ecdsa-sha256+der")

        (signed,) = js_sign(key_pem, [base64.b64decode(draft["to_sign"])])
        signature = bytearray(base64.b64decode(signed["signature"]))
        signature[-1] ^= 0x01                                  # s altered, DER still valid
        route = f"/api/consults/{cid}/report"
        tampered = await http.post(route, headers=bearer(li), json={
            "report": report, "signature": base64.b64encode(bytes(signature)).decode(),
            "certificate": cert_pem})
        assert tampered.status_code == 400
        assert "does not verify" in tampered.json()["issue"][0]["diagnostics"]
        altered = await http.post(route, headers=bearer(li), json={
            "report": report | {"conclusion": "正常心电图"}, "signature": signed["signature"],
            "certificate": cert_pem})
        assert altered.status_code == 400 and "does not verify" in altered.text
        still = (await http.get(f"/api/consults/{cid}", headers=bearer(li))).json()
        assert still["entry"][0]["resource"]["businessStatus"]["text"] == "claimed"
        assert not [e for e in still["entry"]
                    if e["resource"]["resourceType"] == "DiagnosticReport"]

        sent = await http.post(route, headers=bearer(li), json={
            "report": report, "signature": signed["signature"], "certificate": cert_pem})
        assert sent.status_code == 200, sent.text
        assert sent.json()["businessStatus"]["text"] == "reported"

        again = await http.post(draft_url, headers=bearer(li), json={"conclusion": "x"})
        assert again.status_code == 409                       # reported: amend instead
        amended = (await http.post(draft_url, headers=bearer(li), json={
            "conclusion": "窦性心律，下壁ST段抬高，建议急诊PCI", "codes": codes,
            "amend": True})).json()
        report2 = amended["report"]
        assert (report2["id"], report2["status"]) == (f"{cid}-r2", "amended")
        assert report2["extension"][0]["valueReference"]["reference"] == \
            f"DiagnosticReport/{cid}-r1"
        (signed2,) = js_sign(sec1(key_pem), [base64.b64decode(amended["to_sign"])])
        ok = await http.post(f"/api/consults/{cid}/amend", headers=bearer(li), json={
            "report": report2, "signature": signed2["signature"], "certificate": cert_pem})
        assert ok.status_code == 200, ok.text
        bundle = (await http.get(f"/api/consults/{cid}", headers=bearer(doctor))).json()
        ids = sorted(e["resource"]["id"] for e in bundle["entry"]
                     if e["resource"]["resourceType"] == "DiagnosticReport")
        assert ids == [f"{cid}-r1", f"{cid}-r2"]

    with gw.store.engine.connect() as conn:
        ops = [(r.operation, r.outcome) for r in conn.execute(
            select(ExchangeLog).where(ExchangeLog.correlation_id == cid)
            .order_by(ExchangeLog.id))]
    assert ops.count(("Consults/ReportDraft", "ok")) == 2
    assert ops.count(("Consults/report", "error")) == 2 and ("Consults/report", "ok") in ops
    assert ("Consults/amend", "ok") in ops
