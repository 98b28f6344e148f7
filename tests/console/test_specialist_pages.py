"""The specialist's console pages over HTTP (httpx with a session cookie) against a real
consortium (tests/consult/conftest.py): the pool inbox and its fragment, claim races said
in the page, the case with its material (ECG chart option, DICOM PNG through the console),
the report drafted, signed on the specialist's side and sent through the console, its
verification and amendment shown; refusals said clearly, never as a stack trace."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re

import httpx
import pytest

from federation.security.signing import Signer
from federation.synth.studies import write_dicom_study, write_ecg_study
from tests.conftest import bearer, staff_token
from tests.consult.conftest import consult_pki, world  # noqa: F401 - fixtures

in_world = pytest.mark.asyncio(loop_scope="module")


async def _token(world, site: str, user: str, role: str) -> str:  # noqa: F811
    return await asyncio.to_thread(staff_token, world.gateway, world.pki, site=site,
                                   user=user, roles=(role,))


class Console:
    """A signed-in person's browser, minus the browser: session cookie and CSRF token."""

    def __init__(self, world, token: str) -> None:  # noqa: F811
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.gateway.http_port}",
                                      cookies={"fed_session": token}, timeout=60)

    async def __aenter__(self) -> Console:
        await self.http.get("/console/signin")          # the CSRF cookie
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    @property
    def csrf(self) -> str:
        return self.http.cookies.get("fed_csrf", path="/console") or ""

    async def get(self, path: str, **kw) -> httpx.Response:
        return await self.http.get(path, **kw)

    async def act(self, cid: str, action: str, *, inbox: bool = False, **fields: str
                  ) -> httpx.Response:
        data = {"csrf": self.csrf, **fields}
        headers = {}
        if inbox:
            data["from"] = "inbox"
            headers["HX-Request"] = "true"
        return await self.http.post(f"/console/consults/{cid}/act/{action}", data=data,
                                    headers=headers)

    async def json(self, path: str, body: dict, *, csrf: bool = True) -> httpx.Response:
        return await self.http.post(path, json=body,
                                    headers={"X-CSRF-Token": self.csrf} if csrf else {})


async def _consult(world, doctor: str, patient: str, kind: str, studies: list[str],  # noqa: F811
                   **over) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.gateway.http_port}",
                                 timeout=60) as http:
        made = await http.post("/api/consults", headers=bearer(doctor), json={
            "patient_id": patient, "kind": kind, "question": "胸痛2小时，请判读心电图",
            "consent": "written", "urgency": "urgent", "study_ids": studies, **over})
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _sign(world, user: str, to_sign: str) -> tuple[str, str]:  # noqa: F811
    me = world.pki.material(user)
    signature = Signer(me.cert_pem, me.key_pem).sign(base64.b64decode(to_sign))
    return base64.b64encode(signature).decode(), me.cert_pem.decode()


@in_world
async def test_inbox_claim_race_case_material_and_signed_report(world) -> None:  # noqa: F811
    patient = world.linked("county-a")[3]
    root = world.studies["county-a"]
    write_ecg_study(root, "ecg-page-1", patient)
    write_dicom_study(root, "ct-page-1", patient, slices=2, size=32)
    wang, li, sun = await asyncio.gather(
        _token(world, "county-a", "cdr-wang", "doctor"),
        _token(world, "city-1", "csp-li", "specialist"),
        _token(world, "city-1", "csp-sun", "specialist"))
    cid = await _consult(world, wang, patient, "ecg", ["ecg-page-1", "ct-page-1"])
    async with Console(world, li) as li_c, Console(world, sun) as sun_c:
        inbox = await li_c.get("/console/consults")
        assert inbox.status_code == 200
        row = re.search(rf'<tr data-consult="{cid}">(.*?)</tr>', inbox.text, re.S)
        assert row, "the new request is not in the pool list"
        assert 'class="countdown" data-deadline="' in row[1]     # the claim limit counts down
        assert 'data-action="claim"' in row[1]
        fragment = await li_c.get("/console/consults/inbox")
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert 'hx-trigger="every 3s' in fragment.text and cid in fragment.text

        # csp-sun claims first (from the inbox: htmx is sent to the case page) …
        won = await sun_c.act(cid, "claim", inbox=True)
        assert won.status_code == 204 and won.headers["hx-redirect"] == f"/console/consults/{cid}"
        # … and csp-li, a moment late, is told so in the inbox
        late = await li_c.act(cid, "claim", inbox=True)
        assert late.status_code == 200
        said = html.unescape(late.text)
        assert 'data-outcome="refused"' in said and "csp-sun @ city-1 claimed it first" in said
        assert f'<tr data-consult="{cid}">' not in said.split('id="pool-table"')[-1].split(
            "</table>")[0]

        case = await sun_c.get(f"/console/consults/{cid}")
        assert case.status_code == 200, case.text[:500]
        page = html.unescape(case.text)
        assert "胸痛2小时，请判读心电图" in page
        assert f'hx-get="/console/consults/{cid}/studies/ecg-page-1/ecg-12lead.csv/ecg"' in page
        assert f'src="/console/consults/{cid}/studies/ct-page-1/ct-001.dcm/view"' in page
        assert 'id="report-form"' in page and 'type="file" id="key"' in page
        assert 'id="prior"' in page and "Traceback" not in page

        ecg = await sun_c.get(f"/console/consults/{cid}/studies/ecg-page-1/ecg-12lead.csv/ecg")
        option = json.loads(html.unescape(re.search(r"data-chart='([^']+)'", ecg.text)[1]))
        assert [s["name"] for s in option["series"]] == [
            "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert all(100 < len(s["data"]) <= 1200 for s in option["series"])   # thinned
        # a QRS peak survives the thinning (the synthetic R wave is > 0.5 mV in lead II)
        assert max(option["series"][1]["data"]) > 0.5

        shown = await sun_c.get(f"/console/consults/{cid}/studies/ct-page-1/ct-001.dcm/view")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert shown.content.startswith(b"\x89PNG") and shown.headers["x-object-sha256"]
        assert shown.headers["cache-control"] == "private, no-store"

        # the report: drafted through the console, signed on this side, sent back
        base = f"/console/consults/{cid}"
        no_csrf = await sun_c.json(f"{base}/report-draft", {"conclusion": "x"}, csrf=False)
        assert no_csrf.status_code == 403
        empty = await sun_c.json(f"{base}/report-draft", {"conclusion": " "})
        assert empty.status_code == 400 and "conclusion" in empty.json()["error"]
        draft = (await sun_c.json(f"{base}/report-draft", {
            "conclusion": "窦性心律，未见急性ST-T改变",
            "codes": [{"system": "http://snomed.info/sct", "code": "64730000",
                       "display": "Normal sinus rhythm"}]})).json()
        signature, cert = _sign(world, "csp-sun", draft["to_sign"])
        no_cert = await sun_c.json(f"{base}/report", {"report": draft["report"],
                                                      "signature": signature})
        assert no_cert.status_code == 400 and no_cert.json()["fields"] == {
            "certificate": "required"}
        forged, _ = _sign(world, "csp-li", draft["to_sign"])      # another person's key
        refused = await sun_c.json(f"{base}/report", {"report": draft["report"],
                                                      "signature": forged, "certificate": cert})
        assert refused.status_code == 400 and "refused" in refused.json()["error"]
        sent = await sun_c.json(f"{base}/report", {"report": draft["report"],
                                                   "signature": signature, "certificate": cert})
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"redirect": f"{base}?signed=report"}

        done = html.unescape((await sun_c.get(f"{base}?signed=report")).text)
        assert 'data-outcome="signed"' in done and 'data-verify="valid"' in done
        assert "csp-sun (specialist) @ city-1" in done
        assert "Amend the report" in done or "修订报告" in done

        # an amendment: both versions shown, the first superseded, each verified
        amended = (await sun_c.json(f"{base}/report-draft", {
            "conclusion": "窦性心律；补充：QT间期正常", "amend": True})).json()
        signature, cert = _sign(world, "csp-sun", amended["to_sign"])
        assert (await sun_c.json(f"{base}/report", {
            "report": amended["report"], "signature": signature, "certificate": cert,
            "amend": True})).status_code == 200
        history = html.unescape((await sun_c.get(base)).text)
        assert history.count('data-verify="valid"') == 2
        assert history.index('data-version="2"') < history.index('data-version="1"')
        assert "已被修订" in history

        inbox = await sun_c.get("/console/consults")
        assert cid in inbox.text.split('id="done-table"')[1]


@in_world
async def test_refusals_are_said_in_the_page(world) -> None:  # noqa: F811
    patient = world.linked("county-a")[4]
    wang, li, ma = await asyncio.gather(
        _token(world, "county-a", "cdr-wang", "doctor"),
        _token(world, "city-1", "csp-li", "specialist"),
        _token(world, "township-a1", "cdr-ma", "doctor"))
    cid = await _consult(world, wang, patient, "ecg", [])
    async with Console(world, li) as li_c, Console(world, ma) as ma_c, \
            Console(world, wang) as wang_c:
        # a site not party to the consult learns nothing of it
        hidden = await ma_c.get(f"/console/consults/{cid}")
        assert hidden.status_code == 404 and 'data-status="404"' in hidden.text
        # doctors may not draft reports (the authorisation matrix), a page not JSON
        draft = await wang_c.json(f"/console/consults/{cid}/report-draft", {"conclusion": "x"})
        assert draft.status_code == 403 and 'data-status="403"' in draft.text
        # the requesting doctor sees it in their site's list, with cancel on the case page
        ours = await wang_c.get("/console/consults")
        assert f'<tr data-consult="{cid}">' in ours.text and 'id="ours-table"' in ours.text
        assert 'data-action="cancel"' in (await wang_c.get(f"/console/consults/{cid}")).text

        bad = await li_c.act(cid, "explode")
        assert bad.status_code == 400 and "is not something this page can do" in bad.text
        forged = await li_c.http.post(f"/console/consults/{cid}/act/claim",
                                      data={"csrf": "forged"})
        assert forged.status_code == 403
        # hand-over before claiming: the case page says why, at the state it is in
        assert (await li_c.act(cid, "claim")).status_code == 303
        nobody = await li_c.act(cid, "hand-over", inbox=True)
        assert nobody.status_code == 200 and "name the colleague" in html.unescape(nobody.text)
        wrong = await li_c.act(cid, "hand-over", to_user="csp-li")
        assert wrong.status_code == 400
        assert "already with csp-li" in html.unescape(wrong.text)
        assert 'id="report-form"' in wrong.text       # the case page, with the refusal
        stale = await li_c.act(cid, "decline", version="1")
        assert stale.status_code == 409 and 'data-outcome="refused"' in stale.text
        handed = await li_c.act(cid, "hand-over", inbox=True, to_user="csp-sun")
        assert 'data-outcome="ok"' in handed.text
        # no ECG in this consult: an object that is not there is said where the chart goes
        missing = await li_c.get(f"/console/consults/{cid}/studies/nope/x.csv/ecg")
        assert missing.status_code == 200 and 'data-ecg="refused"' in missing.text


@in_world
async def test_an_interactive_consult_is_booked_in_a_free_slot(world) -> None:  # noqa: F811
    patient = world.linked("county-a")[5]
    wang, li = await asyncio.gather(_token(world, "county-a", "cdr-wang", "doctor"),
                                    _token(world, "city-1", "csp-li", "specialist"))
    cid = await _consult(world, wang, patient, "ecg", [], mode="interactive")
    async with Console(world, li) as li_c:
        assert (await li_c.act(cid, "claim")).status_code == 303
        case = html.unescape((await li_c.get(f"/console/consults/{cid}")).text)
        slots = re.findall(r'name="slot_start" value="([^"]+)"', case)
        assert len(slots) == 8 and slots == sorted(slots)
        booked = await li_c.act(cid, "schedule", slot_start=slots[0])
        assert booked.status_code == 303
        after = html.unescape((await li_c.get(f"/console/consults/{cid}")).text)
        assert 'data-state="scheduled"' in after
        assert 'data-link="meeting"' in after and "meet.consortium.example" in after
        assert 'data-action="start"' in after
        # the slot just booked is no longer offered for another consult of the same pool
        other = await _consult(world, wang, patient, "ecg", [], mode="interactive")
        assert (await li_c.act(other, "claim")).status_code == 303
        offered = re.findall(r'name="slot_start" value="([^"]+)"',
                             html.unescape((await li_c.get(f"/console/consults/{other}")).text))
        assert slots[0] not in offered and offered
        past = await li_c.act(other, "schedule", slot_start="2020-01-01T09:00:00+00:00")
        assert past.status_code == 400 and "the slot must be in the future" in past.text
