"""Case material as a browser shows it, over the HTTP API: a DICOM slice as PNG, the ECG
as lead arrays, a slide image as it is — each fetched from the origin node through the
gateway with the study's access checks and one exchange-log row; objects too large to
hold or of a type that cannot be shown are refused with a clear OperationOutcome."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from federation.consult.render import png
from federation.store.models import ExchangeLog
from federation.synth.studies import write_blob_study, write_dicom_study, write_ecg_study
from tests.conftest import bearer, staff_token
from tests.consult.test_consult_render import decode_png

pytestmark = pytest.mark.asyncio(loop_scope="module")
CAP = 2 * 1024 * 1024          # consult_view_max_bytes of the test world (conftest)


def exchange_rows(world, consult_id: str) -> list[tuple[str, str, str]]:
    with world.gateway.store.engine.connect() as conn:
        return [(r.operation, r.outcome, r.requester_id.split("/")[-1]) for r in conn.execute(
            select(ExchangeLog).where(ExchangeLog.correlation_id == consult_id)
            .order_by(ExchangeLog.id))]


async def test_case_material_is_rendered_for_the_browser(world) -> None:
    gw, pki = world.gateway, world.pki
    patient = world.linked("county-a")[6]
    root = world.studies["county-a"]
    write_dicom_study(root, "ct-view-1", patient, slices=2, size=40)
    ecg = write_ecg_study(root, "ecg-view-1", patient)
    slide = write_blob_study(root, "slide-view-1", patient, 10, name="slide.png")
    image = png(np.arange(64, dtype=np.uint8).reshape(8, 8))
    (slide / "slide.png").write_bytes(image)
    write_blob_study(root, "tif-view-1", patient, 1000, name="slide.tif")
    write_blob_study(root, "big-view-1", patient, CAP + 1, name="big.png")
    doctor, li, zhou, ma = await asyncio.gather(*(asyncio.to_thread(
        staff_token, gw, pki, site=site, user=user, roles=roles) for site, user, roles in (
            ("county-a", "cdr-wang", ("doctor",)), ("city-1", "csp-li", ("specialist",)),
            ("city-1", "csp-zhou", ("doctor",)), ("township-a1", "cdr-ma", ("doctor",)))))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}",
                                 timeout=60) as http:
        made = await http.post("/api/consults", headers=bearer(doctor), json={
            "patient_id": patient, "kind": "imaging", "question": "请会诊影像",
            "consent": "written", "study_ids": ["ct-view-1", "ecg-view-1", "slide-view-1",
                                                "tif-view-1", "big-view-1"]})
        assert made.status_code == 201, made.text
        cid = made.json()["id"]
        assert (await http.post(f"/api/consults/{cid}/claim", headers=bearer(li))
                ).status_code == 200
        base = f"/api/consults/{cid}/studies"
        manifests = {m["study_id"]: m for m in
                     (await http.get(base, headers=bearer(li))).json()["studies"]}

        ct = await http.get(f"{base}/ct-view-1/ct-002.dcm/view", headers=bearer(li))
        assert ct.status_code == 200, ct.text
        assert ct.headers["content-type"] == "image/png"
        assert ct.headers["cache-control"] == "private, no-store"
        ct_obj = next(o for o in manifests["ct-view-1"]["objects"] if o["name"] == "ct-002.dcm")
        assert ct.headers["x-object-sha256"] == ct_obj["sha256"]
        pixels = decode_png(ct.content)
        assert pixels.shape == (40, 40)                       # Rows × Columns
        assert pixels[17:23, 17:23].min() > 200 and pixels[:3, :3].max() < 30
        narrow = await http.get(f"{base}/ct-view-1/ct-002.dcm/view",
                                params={"wc": "1030", "ww": "60"}, headers=bearer(li))
        assert decode_png(narrow.content)[:3, :3].max() == 0   # the caller's window
        bad_frame = await http.get(f"{base}/ct-view-1/ct-002.dcm/view",
                                   params={"frame": "2"}, headers=bearer(li))
        assert bad_frame.status_code == 400
        assert "has 1 frame(s)" in bad_frame.json()["issue"][0]["diagnostics"]
        bad_param = await http.get(f"{base}/ct-view-1/ct-002.dcm/view",
                                   params={"zoom": "2"}, headers=bearer(li))
        assert bad_param.status_code == 400 and "supported: frame" in bad_param.text

        waves = await http.get(f"{base}/ecg-view-1/ecg-12lead.csv/view", headers=bearer(li))
        assert waves.status_code == 200 and waves.headers["content-type"] == "application/json"
        body = waves.json()
        assert (body["rate_hz"], body["unit"], body["samples"]) == (500, "uV", 5000)
        assert len(body["leads"]) == 12 and {len(v) for v in body["leads"].values()} == {5000}
        first = (ecg / "ecg-12lead.csv").read_text().splitlines()[1].split(",")
        assert [body["leads"][lead][0] for lead in body["leads"]] == [int(v) for v in first[1:]]
        three = await http.get(f"{base}/ecg-view-1/ecg-12lead.csv/view",
                               params={"seconds": "3"}, headers=bearer(li))
        assert len(three.json()["leads"]["II"]) == 1500

        shown = await http.get(f"{base}/slide-view-1/slide.png/view", headers=bearer(doctor))
        assert shown.status_code == 200 and shown.content == image    # the requester too
        assert shown.headers["content-type"] == "image/png"
        assert hashlib.sha256(shown.content).hexdigest() == shown.headers["x-object-sha256"]

        tif = await http.get(f"{base}/tif-view-1/slide.tif/view", headers=bearer(li))
        assert tif.status_code == 415
        issue = tif.json()["issue"][0]
        assert issue["code"] == "not-supported" and "image/tiff" in issue["diagnostics"]
        assert "application/dicom" in issue["diagnostics"] and "text/csv" in issue["diagnostics"]
        big = await http.get(f"{base}/big-view-1/big.png/view", headers=bearer(li))
        assert big.status_code == 413
        assert big.json()["issue"][0]["code"] == "too-costly"
        assert f"over the {CAP}-byte limit" in big.json()["issue"][0]["diagnostics"]
        # the big object is still there to download as it is
        streamed = await http.get(f"{base}/big-view-1/big.png", headers=bearer(li))
        assert streamed.status_code == 200 and len(streamed.content) == CAP + 1

        # a doctor of the hub who is not in the imaging pool, and a site not party to it
        refused = await http.get(f"{base}/ct-view-1/ct-001.dcm/view", headers=bearer(zhou))
        assert refused.status_code == 403
        assert "may not read the studies" in refused.json()["issue"][0]["diagnostics"]
        hidden = await http.get(f"{base}/ct-view-1/ct-001.dcm/view", headers=bearer(ma))
        assert hidden.status_code == 404 and "does not exist" in hidden.text
        missing = await http.get(f"{base}/ct-view-1/ct-009.dcm/view", headers=bearer(li))
        assert missing.status_code == 404 and "ct-001.dcm" in missing.text

    views = [(ok, who) for op, ok, who in exchange_rows(world, cid)
             if op == "Consults/ViewStudy"]
    # li's ct, narrow window, frame 2 (fetched, then refused by the rendering), ecg and
    # ecg 3 s are ok; tif, big and the missing object errors; the unknown parameter was
    # refused before anything was asked of the origin (no row)
    assert views.count(("ok", "csp-li")) == 5 and ("ok", "cdr-wang") in views
    assert [ok for ok, who in views if who == "csp-zhou"] == ["error"]
    assert sum(1 for ok, who in views if ok == "error" and who == "csp-li") == 3
    # told nothing of the consult, but the attempt is on record
    assert [ok for ok, who in views if who == "cdr-ma"] == ["error"]
