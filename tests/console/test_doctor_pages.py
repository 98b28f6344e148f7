"""The county / township doctor's pages: find a patient, read the record across sites,
send and follow referrals.

Two layers here: the pure rules of :mod:`federation.console.patient_view` and
:mod:`federation.console.referral_view`; and the pages over httpx against an in-process
gateway (fields, errors, roles, nothing of the patient in the logs). The core path in
Debian's Chromium against the demo consortium is in ``test_doctor_browser.py`` (a
browser module holds only plain tests: see ``browser`` in conftest.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re

import httpx
import pytest

from federation.console.patient_view import (
    bundle_issues,
    lab_charts,
    people_of,
    record_at,
    search_params,
    timeline,
    with_person,
)
from federation.console.referral_view import (
    act_body,
    document_text,
    form_fields,
    referral_body,
    task_row,
)
from federation.fhir_systems import EMPI_PERSON_SYSTEM, RESIDENT_ID_SYSTEM
from federation.logs import QUIET_LOGGERS
from federation.security.accounts import hash_password

VALID_ID = "53232319760703568X"        # GB 11643 check character X
PASSWORD = "county doctor password"


# ---------------------------------------------------------------------------- the search box


@pytest.mark.parametrize(("box", "birth", "params"), [
    (VALID_ID, "", {"identifier": f"{RESIDENT_ID_SYSTEM}|{VALID_ID}"}),
    ("53232319760703568x", "", {"identifier": f"{RESIDENT_ID_SYSTEM}|{VALID_ID}"}),
    ("５３２３２３１９７６０７０３５６８Ｘ", "", {"identifier": f"{RESIDENT_ID_SYSTEM}|{VALID_ID}"}),
    ("532323760703568", "", {"identifier": f"{RESIDENT_ID_SYSTEM}|53232319760703568X"}),
    ("181 5319 5947", "", {"telecom": "18153195947"}),
    ("+86 181-5319-5947", "", {"telecom": "18153195947"}),
    ("孙霞洁", "1976-07-03", {"name": "孙霞洁", "birthdate": "1976-07-03"}),
    ("  Sun   Xiajie ", "1976-07-03", {"name": "Sun Xiajie", "birthdate": "1976-07-03"}),
    (VALID_ID, "1976-07-03", {"identifier": f"{RESIDENT_ID_SYSTEM}|{VALID_ID}",
                              "birthdate": "1976-07-03"}),
])
def test_the_search_box_becomes_the_right_pdqm_parameter(box, birth, params) -> None:
    found, errors = search_params(box, birth)
    assert errors == {}
    assert found == params


@pytest.mark.parametrize(("box", "birth", "field"), [
    ("", "", "q"),
    ("   ", "1976-07-03", "q"),
    ("532323197607035681", "", "q"),      # wrong check digit
    ("532323197613035688", "", "q"),      # month 13
    ("53232319760703568", "", "q"),       # 17 characters
    ("1815319", "", None),                # 7 digits: a landline, searched as a phone
    ("12345", "", "q"),                   # too short for any number
    ("孙霞洁", "", "birth"),               # a name needs the birth date
    ("孙霞洁", "03/07/1976", "birth"),
    ("孙3洁", "1976-07-03", "q"),
    ("<script>", "1976-07-03", "q"),
])
def test_bad_input_is_an_error_at_its_field(box, birth, field) -> None:
    found, errors = search_params(box, birth)
    if field is None:
        assert errors == {} and found == {"telecom": "1815319"}
        return
    assert field in errors, (box, errors)
    zh, en = errors[field]
    assert zh and en


def _patient(site: str, record: str, person: str | None, name: str, score: float) -> dict:
    ids = [{"system": f"urn:federation:site:{site}:patient-id", "value": record}]
    if person:
        ids.append({"system": EMPI_PERSON_SYSTEM, "value": person})
    return {"resource": {"resourceType": "Patient", "id": record,
                         "meta": {"source": f"urn:federation:site:{site}"}, "identifier": ids,
                         "name": [{"text": name}], "gender": "female",
                         "birthDate": "1976-07-03"},
            "search": {"mode": "match", "score": score}}


def test_search_results_are_people_with_the_sites_that_know_them() -> None:
    bundle = {"entry": [_patient("city-1", "c1", "P1", "孙霞洁", 0.9),
                        _patient("county-a", "a1", "P1", "孙霞潔", 0.97),
                        _patient("county-b", "b1", "P2", "孙霞", 0.4),
                        _patient("township-a1", "t1", None, "孙霞洁", 0.8)]}
    people, unlinked = people_of(bundle)
    assert [p.person_id for p in people] == ["P1", "P2"]
    assert people[0].score == 0.97 and people[0].matched_sites == ["city-1", "county-a"]
    assert people[0].names == ["孙霞洁", "孙霞潔"]
    assert unlinked == 1
    person = {"resourceType": "Person", "id": "P1", "name": [{"text": "孙霞洁"}],
              "identifier": [{"system": EMPI_PERSON_SYSTEM, "value": "P1"},
                             {"use": "official", "value": "532***********568X"}],
              "telecom": [{"system": "phone", "value": "181****5947"}],
              "link": [{"target": {"reference": f"Patient/{r}", "identifier": {
                  "system": f"urn:federation:site:{s}", "value": r}}}
                  for s, r in (("township-a2", "t2"), ("city-1", "c1"), ("county-a", "a1"))]}
    shown = with_person(people[0], person)
    assert shown.sites == ["city-1", "county-a", "township-a2"]   # the EMPI knows more
    assert shown.masked_id == "532***********568X" and shown.masked_phone == "181****5947"
    assert record_at(person, "county-a") == "a1" and record_at(person, "county-b") is None


def _obs(site: str, loinc: str | None, value, when: str, unit: str = "mmol/L") -> dict:
    coding = [{"system": "urn:local", "code": "GLU"}]
    if loinc:
        coding.append({"system": "http://loinc.org", "code": loinc, "display": "Glucose"})
    body = {"resourceType": "Observation", "meta": {"source": f"urn:federation:site:{site}"},
            "code": {"text": "葡萄糖", "coding": coding}, "effectiveDateTime": when,
            "referenceRange": [{"low": {"value": 3.9}, "high": {"value": 6.1}}]}
    if isinstance(value, str):
        body["valueString"] = value
    else:
        body["valueQuantity"] = {"value": value, "unit": unit}
    return {"resource": body}


def test_lab_trends_are_one_chart_per_loinc_code_with_a_line_per_site() -> None:
    bundle = {"entry": [
        _obs("county-a", "2345-7", 9.0, "2025-12-13T09:02:00+08:00"),
        _obs("county-a", "2345-7", 7.1, "2024-03-01T09:02:00+08:00"),
        _obs("city-1", "2345-7", 8.2, "2025-01-01T09:00:00+08:00"),
        _obs("city-1", "2345-7", 140, "2025-02-01T09:00:00+08:00", unit="mg/dL"),  # other unit
        _obs("city-1", "2345-7", "positive", "2025-01-01T09:00:00+08:00"),          # not numeric
        _obs("city-1", None, 5.0, "2025-01-01T09:00:00+08:00"),                     # no LOINC
        _obs("city-1", "4548-4", 7.7, "2025-01-01T09:00:00+08:00", unit="%"),
    ]}
    charts = lab_charts(bundle, {"county-a": "县医院", "city-1": "市医院"})
    assert [c["code"] for c in charts] == ["2345-7", "4548-4"]     # most measured first
    glucose = charts[0]
    assert glucose["points"] == 3 and glucose["unit"] == "mmol/L"
    series = {s["name"]: s["data"] for s in glucose["option"]["series"]}
    assert series["县医院"] == [["2024-03-01T09:02:00+08:00", 7.1],
                              ["2025-12-13T09:02:00+08:00", 9.0]]     # oldest first
    assert series["市医院"] == [["2025-01-01T09:00:00+08:00", 8.2]]
    assert glucose["option"]["xAxis"]["type"] == "time"
    band = glucose["option"]["series"][0]["markArea"]["data"][0]
    assert band == [{"yAxis": 3.9}, {"yAxis": 6.1}]
    json.dumps(glucose["option"])                                       # a data- attribute


def test_the_timeline_groups_by_site_then_day_and_the_warnings_name_the_site() -> None:
    def enc(site, start, what):
        return {"resource": {"resourceType": "Encounter", "meta": {
            "source": f"urn:federation:site:{site}"}, "class": {"code": "AMB"},
            "period": {"start": start}, "serviceType": {"text": what}}}
    bundle = {"entry": [
        {"resource": {"resourceType": "OperationOutcome", "issue": [{
            "severity": "warning", "code": "timeout", "diagnostics": "site city-1 timed out",
            "details": {"coding": [{"system": "urn:federation:site-id", "code": "city-1"}]}}]},
         "search": {"mode": "outcome"}},
        enc("township-a1", "2021-01-29T15:27:00+08:00", "全科"),
        enc("county-a", "2020-07-16T10:59:00+08:00", "内科"),
        enc("county-a", "2025-12-13T07:44:00+00:00", "内科"),      # 15:44 in China
        {"resource": {"resourceType": "DiagnosticReport", "meta": {
            "source": "urn:federation:site:county-a"}, "code": {"text": "生化全套"},
            "effectiveDateTime": "2025-12-13T17:02:00+08:00"}},
        {"resource": {"resourceType": "Observation"}},              # not a timeline item
    ]}
    groups = timeline(bundle, ["county-a"])
    assert [site for site, _ in groups] == ["county-a", "township-a1"]
    days = groups[0][1]
    assert [d.date for d in days] == ["2025-12-13", "2020-07-16"]
    assert [(i["time"], i["what"]) for i in days[0].items] == [("15:44", "内科"),
                                                              ("17:02", "生化全套")]
    assert days[0].items[0]["label"] == ("门诊", "Outpatient")
    issues = bundle_issues(bundle)
    assert [(i.site, i.text) for i in issues] == [("city-1", "site city-1 timed out")]


# ---------------------------------------------------------------------------- referral forms


def _form(**over: str) -> dict[str, str]:
    return {"direction": "upward", "urgency": "urgent", "target_site": "city-1",
            "department": "cardiology", "reason_text": "不稳定型心绞痛", "reason_code": "i20.0",
            "consent_method": "written", "consent_by": "patient", "request_id": "r1", **over}


def test_a_complete_form_is_the_referral_apis_body() -> None:
    body, errors = referral_body(_form(notes="胸痛3天"), "a1")
    assert errors == {}
    assert body == {"patient_id": "a1", "direction": "upward", "urgency": "urgent",
                    "target_site": "city-1", "department": "cardiology",
                    "reason": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I20.0",
                               "text": "不稳定型心绞痛"},
                    "notes": "胸痛3天\n知情同意：患者本人", "consent": {"method": "written"},
                    "request_id": "r1"}


@pytest.mark.parametrize(("over", "fields"), [
    ({"target_site": ""}, {"target_site"}),
    ({"consent_method": "", "consent_by": ""}, {"consent_method", "consent_by"}),
    ({"reason_text": "", "reason_code": ""}, {"reason_text"}),
    ({"reason_code": "胸痛"}, {"reason_code"}),
    ({"direction": "downward"}, {"fu_0"}),                     # a plan is needed
    ({"direction": "downward", "fu_days_0": "x", "fu_what_0": "复查"}, {"fu_0"}),
])
def test_a_form_missing_what_the_workflow_needs_says_so_at_each_field(over, fields) -> None:
    _, errors = referral_body(_form(**over), "a1")
    assert set(errors) == fields


def test_a_downward_referral_carries_its_follow_up_plan_and_who_consented() -> None:
    body, errors = referral_body(_form(direction="downward", fu_days_0="14",
                                       fu_what_0="复查血糖", fu_days_2="30", fu_what_2="随访",
                                       consent_by="guardian", consent_name="李四",
                                       discharge_summary="出院小结"), "a1")
    assert errors == {}
    assert body["follow_ups"] == [{"days_from_now": 14, "what": "复查血糖"},
                                  {"days_from_now": 30, "what": "随访"}]
    assert body["notes"] == "知情同意：监护人（李四）"
    assert body["discharge_summary"] == "出院小结"
    _, errors = referral_body(_form(), None)
    assert set(errors) == {"person"}


def test_actions_need_what_their_move_needs_and_times_are_china_time() -> None:
    body, errors = act_body("book", {"appointment_start": "2026-12-03T09:30",
                                     "expected_version": "3"})
    assert errors == {}
    assert body == {"appointment_start": "2026-12-03T09:30:00+08:00", "expected_version": 3}
    assert set(act_body("book", {})[1]) == {"appointment_start"}
    assert set(act_body("book", {"appointment_start": "tomorrow"})[1]) == {"appointment_start"}
    assert set(act_body("reject", {"reason_text": "满了"})[1]) == {"reason_code"}
    assert set(act_body("complete", {})[1]) == {"result_text"}
    assert set(act_body("note", {"note": "  "})[1]) == {"note"}
    assert set(act_body("accept", {})[1]) == {"admission_note"}   # or a time
    assert act_body("accept", {"admission_note": "明日门诊"})[1] == {}
    assert form_fields({"consent": "x", "reason.code": "y", "follow_ups[2].what": "z",
                        "target_site": "w"}) == {"consent_method": "x", "reason_code": "y",
                                                 "fu_2": "z", "target_site": "w"}


def test_a_task_is_one_row_of_my_referrals() -> None:
    task = {"resourceType": "Task", "id": "ref-1", "status": "requested",
            "businessStatus": {"text": "awaiting-triage"}, "priority": "stat",
            "for": {"reference": "Patient/a1", "identifier": {"system": EMPI_PERSON_SYSTEM,
                                                               "value": "P1"}},
            "requester": {"identifier": {"value": "county-a"}},
            "owner": {"reference": "Organization/city-1"},
            "note": [{"text": "department: cardiology"}],
            "authoredOn": "2026-11-30T10:00:00Z",
            "output": [{"type": {"text": "result"}, "valueReference": {"reference": "D/1"}}]}
    row = task_row(task)
    assert (row["id"], row["business"], row["urgency"], row["requester"], row["owner"],
            row["department"], row["person_id"], row["has_result"]) == (
        "ref-1", "awaiting-triage", "emergency", "county-a", "city-1", "cardiology", "P1",
        True)
    doc = {"content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                       "data": base64.b64encode("建议 PCI".encode()).decode()}}]}
    assert document_text(doc) == "建议 PCI" and document_text(None) == ""


# ---------------------------------------------------------------------------- pages (httpx)


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, "the page carries no CSRF token"
    return found[1]


async def _doctor(gateway, http: httpx.AsyncClient, user: str = "dr-zhou",
                  roles: tuple[str, ...] = ("doctor",), site: str | None = "county-a") -> str:
    gateway.store.put_account(user, roles, hash_password(PASSWORD), dt.datetime.now(dt.UTC),
                              site_id=site)
    signin = await http.get("/console/signin")
    answer = await http.post("/console/signin", data={
        "csrf": _csrf(signin.text), "site": site or "consortium", "username": user,
        "password": PASSWORD})
    assert answer.status_code == 303, answer.text[:400]
    return _csrf(signin.text)       # the session's CSRF token (its cookie) stays


async def test_the_search_page_shows_each_error_at_its_field(gateway, http) -> None:
    csrf = await _doctor(gateway, http)
    page = await http.get("/console/patients")
    assert page.status_code == 200 and 'id="q"' in page.text and 'id="birth"' in page.text
    for data, field in (({"q": ""}, "q"), ({"q": "532323197607035681"}, "q"),
                        ({"q": "孙霞洁"}, "birth")):
        answer = await http.post("/console/patients", data={"csrf": csrf, **data})
        assert answer.status_code == 400
        assert f'data-field="{field}"' in answer.text
        assert 'aria-invalid="true"' in answer.text
        assert data["q"] in answer.text          # what was typed stays in the box
    english = await http.post("/console/patients?lang=en", data={"csrf": csrf, "q": "孙霞洁"})
    assert "To search by name, give the birth date too" in english.text
    forged = await http.post("/console/patients", data={"csrf": "forged", "q": VALID_ID})
    assert forged.status_code == 403


@pytest.fixture
def production_logging():
    """The loggers at the levels :func:`federation.logs.configure_logging` gives them."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


async def test_a_search_leaves_no_name_or_id_number_in_logs_or_urls(
        gateway, http, caplog, production_logging) -> None:
    csrf = await _doctor(gateway, http)
    caplog.set_level(logging.DEBUG)     # the root; quiet loggers stay at warnings
    for box, birth in ((VALID_ID, ""), ("孙霞洁", "1976-07-03"), ("18153195947", "")):
        answer = await http.post("/console/patients", data={"csrf": csrf, "q": box,
                                                             "birth": birth})
        assert answer.status_code == 200, answer.text[:500]
        assert "没有找到符合的患者" in answer.text
        assert box not in str(answer.url)         # the search is a POST
    rows = gateway.store.list_exchanges(limit=20)
    searches = [r for r in rows if r.operation == "FHIR/Patient?search"]
    assert len(searches) == 3 and all(r.requester_id == "dr-zhou" for r in searches)
    logged = caplog.text + "".join(f"{r.detail}{r.patient_ref}" for r in rows)
    for secret in (VALID_ID, "孙霞洁", "18153195947", "1976-07-03"):
        assert secret not in logged


async def test_other_roles_get_the_403_page_and_unknown_people_the_404(gateway, http) -> None:
    await _doctor(gateway, http, user="admin-liu", roles=("regional-admin",), site=None)
    for path in ("/console/patients", "/console/patients/P1", "/console/referrals",
                 "/console/referrals/new"):
        answer = await http.get(path)
        assert answer.status_code == 403 and 'data-status="403"' in answer.text, path
    http.cookies.clear()
    await _doctor(gateway, http)
    missing = await http.get("/console/patients/Pnobody")
    assert missing.status_code == 404 and 'data-status="404"' in missing.text
    assert "Traceback" not in missing.text
