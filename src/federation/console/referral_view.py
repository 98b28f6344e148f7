"""What the doctor's referral pages show and send, made from and for the referral API
(``/api/referrals…``): plain functions, no I/O.

* :func:`referral_body` — the "new referral" form as the body of ``POST /api/referrals``,
  with the errors a doctor can fix before anything is sent (each at its field);
* :func:`act_body` — an action's form as the body of ``POST /api/referrals/{id}/{action}``;
* :func:`form_fields` — the API's field names (``issue.expression``) as the form's;
* :func:`task_row` — a FHIR Task of a search as one row of "my referrals";
* vocabularies in both languages: statuses, urgencies, departments, actions.

Messages are ``(zh, en)`` pairs; the templates say them in the reader's language.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from typing import Any

from federation.fhir_systems import EMPI_PERSON_SYSTEM

__all__ = ["ACTIONS", "DEPARTMENTS", "DIRECTIONS", "STATUSES", "URGENCIES", "act_body",
           "ACT_INPUTS", "EVENTS", "direction", "document_text",
           "form_fields", "referral_body", "task_row"]

Message = tuple[str, str]
ICD10 = "http://hl7.org/fhir/sid/icd-10"
#: ICD-10 code shape (GB/T 14396 adds extension digits after the point)
_ICD10 = re.compile(r"^[A-TV-Z]\d{2}(\.[0-9A-Z]{1,4})?$")
LOCAL = dt.timezone(dt.timedelta(hours=8))
MAX_FOLLOW_UPS = 5

STATUSES: dict[str, Message] = {
    "requested": ("待接收", "requested"), "awaiting-triage": ("待接收", "awaiting triage"),
    "in-visit": ("就诊中", "in the visit"), "accepted": ("已接收", "accepted"),
    "rejected": ("已拒绝", "rejected"), "cancelled": ("已撤销", "cancelled"),
    "in-progress": ("进行中", "in progress"), "completed": ("已完成", "completed"),
    "failed": ("失败", "failed"), "on-hold": ("暂停", "on hold"),
    "booked": ("已预约", "booked"), "no-show": ("未到诊", "no-show"),
    "follow-up": ("随访中", "follow-up"), "result-sent": ("结果已回传", "result sent"),
    "closed": ("已闭环", "closed"), "redirected": ("已改转", "redirected"),
}
URGENCIES: dict[str, Message] = {"routine": ("普通", "routine"), "urgent": ("加急", "urgent"),
                                 "emergency": ("急诊", "emergency")}
#: FHIR Task.priority → the workflow's urgency
PRIORITY_URGENCY = {"routine": "routine", "urgent": "urgent", "stat": "emergency",
                    "asap": "urgent"}
TIERS = ("township", "county", "city")
DIRECTIONS: dict[str, Message] = {"upward": ("上转", "upward"),
                                  "downward": ("下转", "downward")}
DEPARTMENTS: dict[str, Message] = {
    "cardiology": ("心内科", "cardiology"), "neurology": ("神经内科", "neurology"),
    "oncology": ("肿瘤科", "oncology"), "respiratory": ("呼吸内科", "respiratory"),
    "gastroenterology": ("消化内科", "gastroenterology"),
    "orthopaedics": ("骨科", "orthopaedics"), "general-surgery": ("普外科", "general surgery"),
    "obstetrics": ("产科", "obstetrics"), "paediatrics": ("儿科", "paediatrics"),
    "rehabilitation": ("康复科", "rehabilitation"), "emergency": ("急诊科", "emergency"),
    "internal-medicine": ("内科", "internal medicine"),
    "general-practice": ("全科", "general practice"),
    "chronic-disease": ("慢病管理", "chronic disease care"),
}
CONSENT_METHODS: dict[str, Message] = {"written": ("书面签字", "written, signed"),
                                       "verbal": ("口头同意", "verbal"),
                                       "electronic": ("电子签名", "electronic")}
CONSENTERS: dict[str, Message] = {"patient": ("患者本人", "the patient"),
                                  "guardian": ("监护人", "a guardian"),
                                  "relative": ("近亲属", "a close relative")}
#: the moves a page offers, in the order a doctor meets them, with their labels
ACTIONS: dict[str, Message] = {
    "accept": ("接收", "Accept"), "reject": ("拒绝", "Reject"),
    "redirect": ("改转其他机构", "Redirect"), "book": ("预约", "Book"),
    "start": ("接诊", "Start the visit"), "no-show": ("未到诊", "No-show"),
    "follow-up": ("记录随访", "Record a follow-up"),
    "complete": ("完成并回传结果", "Complete with result"),
    "receive-result": ("确认收到结果", "Acknowledge the result"),
    "note": ("留言", "Add a note"), "cancel": ("撤销转诊", "Cancel the referral"),
}

#: what the history says of each event (the moves, and what the platform did)
EVENTS: dict[str, Message] = {**ACTIONS, "create": ("发起", "Sent"),
                              "attach-packet": ("资料包已收集", "Packet gathered"),
                              "escalate": ("超时上报", "Escalated"),
                              "receive-result": ("确认收到结果", "Result acknowledged")}
#: the fields an action's form shows (an API error about another field is said on top)
ACT_INPUTS = frozenset({"note", "reason_code", "reason_text", "target_site", "department",
                        "admission_note", "result_text", "result_kind", "appointment_start",
                        "visit_date"})

_REQUIRED: dict[str, Message] = {
    "target_site": ("请选择转往的机构", "Choose the site to refer to"),
    "consent_method": ("请记录患者的知情同意方式", "Record how the patient consented"),
    "consent_by": ("请选择由谁同意", "Say who consented"),
    "reason": ("请填写转诊原因（诊断名称或 ICD-10 编码）",
               "Give the reason (diagnosis text or ICD-10 code)"),
}


def referral_body(form: dict[str, str], patient_id: str | None
                  ) -> tuple[dict[str, Any], dict[str, Message]]:
    """(``POST /api/referrals`` body, errors by form field). The workflow checks the
    rest (routes, consent values, follow-up plan) and names its field when it refuses."""
    errors: dict[str, Message] = {}
    if not patient_id:
        errors["person"] = ("本机构没有该患者的档案，不能从这里转诊",
                            "Your site holds no record of this patient to refer")
    direction = form.get("direction") or "upward"
    for name in ("target_site", "consent_method", "consent_by"):
        if not form.get(name, "").strip():
            errors[name] = _REQUIRED[name]
    code = form.get("reason_code", "").strip().upper()
    text = form.get("reason_text", "").strip()
    if not code and not text:
        errors["reason_text"] = _REQUIRED["reason"]
    if code and not _ICD10.match(code):
        errors["reason_code"] = ("ICD-10 编码格式不对，如 I20.0、C34.9",
                                 "That is not an ICD-10 code; e.g. I20.0, C34.9")
    follow_ups = []
    for i in range(MAX_FOLLOW_UPS):
        days, what = form.get(f"fu_days_{i}", "").strip(), form.get(f"fu_what_{i}", "").strip()
        if not days and not what:
            continue
        if not days.isdigit() or not what:
            errors[f"fu_{i}"] = ("每次随访要写几天后（整数）和随访内容",
                                 "Each follow-up needs days from now (a whole number) and "
                                 "what it is for")
            continue
        follow_ups.append({"days_from_now": int(days), "what": what})
    if direction == "downward" and not follow_ups and not form.get("based_on"):
        errors["fu_0"] = ("下转需要随访计划（至少一次随访）",
                          "A downward referral needs a follow-up plan (at least one visit)")
    consenter = CONSENTERS.get(form.get("consent_by", ""), ("", ""))[0]
    who = form.get("consent_name", "").strip()
    notes = form.get("notes", "").strip()
    if consenter:
        line = f"知情同意：{consenter}{'（' + who + '）' if who else ''}"
        notes = f"{notes}\n{line}" if notes else line
    body: dict[str, Any] = {
        "patient_id": patient_id or "", "direction": direction,
        "urgency": form.get("urgency") or "routine",
        "target_site": form.get("target_site", "").strip(),
        "department": form.get("department", "").strip(),
        "reason": {k: v for k, v in (("system", form.get("reason_system") or ICD10 if code
                                      else ""), ("code", code), ("text", text),
                                     ("display", form.get("reason_display", "").strip()))
                   if v},
        "notes": notes,
        "consent": {"method": form.get("consent_method", "")},
        "request_id": form.get("request_id") or uuid.uuid4().hex,
    }
    if follow_ups:
        body["follow_ups"] = follow_ups
    if form.get("discharge_summary", "").strip():
        body["discharge_summary"] = form["discharge_summary"].strip()
    if form.get("based_on", "").strip():
        body["based_on"] = form["based_on"].strip()
    return {k: v for k, v in body.items() if v not in ("", {}, None)}, errors


#: the API's request fields → the form's
_FIELDS = {"consent": "consent_method", "consent.method": "consent_method",
           "reason": "reason_text", "reason.code": "reason_code", "reason.text": "reason_text",
           "reason.system": "reason_code", "patient_id": "person", "follow_ups": "fu_0",
           "result_resource": "result_text"}


def form_fields(fields: dict[str, str]) -> dict[str, str]:
    """The API's field names (``issue.expression``) as the form's."""
    out = {}
    for name, text in fields.items():
        m = re.match(r"follow_ups\[(\d+)\]", name)
        out[f"fu_{m[1]}" if m else _FIELDS.get(name, name)] = text
    return out


def _instant(value: str) -> str | None:
    """A ``datetime-local`` value (China time) as an ISO instant with its zone."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=LOCAL)).isoformat()


def act_body(action: str, form: dict[str, str]) -> tuple[dict[str, Any], dict[str, Message]]:
    """(``POST /api/referrals/{id}/{action}`` body, errors by form field)."""
    errors: dict[str, Message] = {}
    body: dict[str, Any] = {}
    for name in ("note", "reason_code", "reason_text", "target_site", "department",
                 "admission_note", "result_text", "result_kind"):
        if form.get(name, "").strip():
            body[name] = form[name].strip()
    for name in ("appointment_start", "visit_date"):
        if form.get(name, "").strip():
            when = _instant(form[name].strip())
            if when is None:
                errors[name] = ("时间格式不对", "That is not a date and time")
            else:
                body[name] = when
    if action == "book" and "appointment_start" not in body and "appointment_start" \
            not in errors:
        errors["appointment_start"] = ("请选择预约时间", "Choose the appointment time")
    if action == "accept" and not (body.get("admission_note") or body.get("appointment_start")) \
            and "appointment_start" not in errors:
        errors["admission_note"] = ("接收时请写接诊安排或选择预约时间",
                                    "Accepting needs an admission note or an appointment time")
    if action == "reject" and not body.get("reason_code"):
        errors["reason_code"] = ("请选择拒绝原因", "Choose why")
    if action == "redirect" and not body.get("target_site"):
        errors["target_site"] = ("请选择改转的机构", "Choose where to redirect")
    if action in ("note", "follow-up") and not body.get("note"):
        errors["note"] = ("请填写内容", "Write the note")
    if action == "complete" and not body.get("result_text"):
        errors["result_text"] = ("请填写诊疗结果", "Write the result")
    if form.get("expected_version", "").isdigit():
        body["expected_version"] = int(form["expected_version"])
    return body, errors


def _site(ref: Any) -> str:
    ref = ref or {}
    ident = ref.get("identifier") or {}
    if ident.get("value"):
        return str(ident["value"])
    return str(ref.get("reference") or "").rpartition("/")[2]


def _person(task: dict[str, Any]) -> str | None:
    ident = (task.get("for") or {}).get("identifier") or {}
    return str(ident["value"]) if ident.get("system") == EMPI_PERSON_SYSTEM and \
        ident.get("value") else None


def direction(requester_tier: str | None, owner_tier: str | None) -> str:
    """Upward when the target's tier is above the sender's (township → county → city)."""
    rank = {t: i for i, t in enumerate(TIERS)}
    return "upward" if rank.get(owner_tier or "", 0) > rank.get(requester_tier or "", 0) \
        else "downward"


def task_row(task: dict[str, Any]) -> dict[str, Any]:
    """One row of "my referrals" from a FHIR Task of the referral workflow."""
    business = (task.get("businessStatus") or {}).get("text") or task.get("status")
    department = next((n["text"][len("department: "):] for n in task.get("note") or []
                       if str(n.get("text", "")).startswith("department: ")), None)
    return {"id": task.get("id"), "status": task.get("status"), "business": business,
            "urgency": PRIORITY_URGENCY.get(str(task.get("priority")), "routine"), "requester": _site(task.get("requester")),
            "owner": _site(task.get("owner")), "department": department,
            "authored": task.get("authoredOn"), "updated": task.get("lastModified"),
            "deadline": (task.get("restriction") or {}).get("period", {}).get("end"),
            "person_id": _person(task), "appointment":
                (task.get("executionPeriod") or {}).get("start"),
            "escalated": any(t.get("code") == "escalated"
                             for t in (task.get("meta") or {}).get("tag") or []),
            "has_result": any((o.get("type") or {}).get("text") == "result"
                              for o in task.get("output") or [])}


def document_text(doc: dict[str, Any] | None) -> str:
    """The inline text of a DocumentReference's plain-text attachment ('' if none)."""
    for content in (doc or {}).get("content") or []:
        attachment = content.get("attachment") or {}
        if str(attachment.get("contentType", "")).startswith("text/") and attachment.get("data"):
            try:
                return base64.b64decode(attachment["data"]).decode("utf-8", "replace")
            except (ValueError, TypeError):
                return ""
    return ""
