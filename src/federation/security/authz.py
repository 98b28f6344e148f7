"""Who may call which HTTP endpoint: the one authorisation matrix.

Every route of the gateway's HTTP API has exactly one row in :data:`HTTP_AUTHZ`, keyed by
method and path template; a route without a row is refused to everyone (default deny),
and ``tests/security/test_authz.py`` walks every route × every role against this table.
A row names the staff roles that may call, the purposes of use they may call it for, and
the SMART scope the token must carry (``user/<Resource>.<read|write>``). Public rows are
few: liveness, metrics for the scraper, and the sign-in itself.

Roles (:data:`federation.security.tokens.STAFF_ROLES`): clinicians (doctor, specialist,
nurse) read for care; a site administrator sees its site's data quality and sync; the
regional administrator runs the consortium (registry, quality, EMPI review) and the
auditor reads the audit trail — those two are consortium accounts the gateway keeps
(:mod:`federation.security.accounts`), never vouched for by a site.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.errors import PermissionDenied
from federation.security.tokens import StaffClaims

__all__ = ["CARE", "CLINICIANS", "HTTP_AUTHZ", "PUBLIC", "Rule", "authorize", "rule_for"]

CLINICIANS = frozenset({"doctor", "specialist", "nurse"})
ADMINS = frozenset({"site-admin", "regional-admin"})
EVERYONE = CLINICIANS | ADMINS | {"auditor"}
#: purposes of reading a patient's data for their care
CARE = frozenset({"TREAT", "COC", "ETREAT"})
OPERATIONS = frozenset({"HOPERAT", "HCOMPL"})
ANY_PURPOSE = CARE | OPERATIONS | {"HRESCH"}
REGIONAL = frozenset({"regional-admin"})
#: who reads the audit trail: auditors and the regional administrators
AUDITORS = frozenset({"auditor", "regional-admin"})


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[str]
    purposes: frozenset[str] = ANY_PURPOSE
    #: (FHIR resource or API area, "read" | "write"); None: no scope needed
    scope: tuple[str, str] | None = None

    @property
    def public(self) -> bool:
        return not self.roles


PUBLIC = Rule(frozenset())

HTTP_AUTHZ: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/auth/token"): PUBLIC,
    ("GET", "/docs"): PUBLIC,                  # the API's own description
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    # the web console (federation.console): its pages are clients of the routes below
    # as the signed-in person; a page's own row only says who may open it
    ("GET", "/console"): Rule(EVERYONE),
    ("GET", "/console/"): Rule(EVERYONE),
    ("GET", "/console/signin"): PUBLIC,
    ("POST", "/console/signin"): PUBLIC,     # then POST /auth/token, its limits and log
    ("POST", "/console/signout"): PUBLIC,
    # the administrators' pages (federation.console.admin); the auditor's is the audit one
    ("GET", "/console/admin"): Rule(ADMINS, OPERATIONS),
    ("GET", "/console/admin/health"): Rule(ADMINS, OPERATIONS),
    ("GET", "/console/admin/details"): Rule(ADMINS, OPERATIONS),
    ("GET", "/console/admin/exchanges"): Rule(ADMINS | {"auditor"}, OPERATIONS),
    ("GET", "/console/admin/audit"): Rule(AUDITORS, OPERATIONS),
    ("GET", "/console/admin/audit/anomalies"): Rule(AUDITORS, OPERATIONS),
    ("POST", "/console/admin/audit/verify"): Rule(AUDITORS, OPERATIONS),
    ("GET", "/console/admin/empi"): Rule(REGIONAL, OPERATIONS),
    ("GET", "/console/admin/empi/{item_id}"): Rule(REGIONAL, OPERATIONS),
    ("POST", "/console/admin/empi/{item_id}/{action}"): Rule(REGIONAL, OPERATIONS),
    # the doctor's pages (federation.console.doctor): clinicians, for care
    ("GET", "/console/patients"): Rule(CLINICIANS, CARE),
    ("POST", "/console/patients"): Rule(CLINICIANS, CARE),
    ("GET", "/console/patients/{person_id}"): Rule(CLINICIANS, CARE),
    ("POST", "/console/patients/{person_id}/break-glass"): Rule(CLINICIANS, CARE),
    ("GET", "/console/referrals"): Rule(CLINICIANS, CARE),
    ("GET", "/console/referrals/live"): Rule(CLINICIANS, CARE),
    ("GET", "/console/referrals/new"): Rule(CLINICIANS, CARE),
    ("GET", "/console/referrals/new/targets"): Rule(CLINICIANS, CARE),
    ("POST", "/console/referrals/new"): Rule(CLINICIANS, CARE),
    ("POST", "/console/referrals/new/normalize"): Rule(CLINICIANS, CARE),
    ("POST", "/console/referrals/new/preview"): Rule(CLINICIANS, CARE),
    ("GET", "/console/referrals/{task_id}"): Rule(CLINICIANS, CARE),
    ("POST", "/console/referrals/{task_id}/{action}"): Rule(CLINICIANS, CARE),
    # the specialist's consult pages (federation.console.specialist); a doctor sees their
    # site's consults and the reports that came back
    ("GET", "/console/consults"): Rule(CLINICIANS, CARE),
    ("GET", "/console/consults/inbox"): Rule(CLINICIANS, CARE),
    ("GET", "/console/consults/{consult_id}"): Rule(CLINICIANS, CARE),
    ("POST", "/console/consults/{consult_id}/act/{action}"): Rule(CLINICIANS, CARE),
    ("GET", "/console/consults/{consult_id}/studies/{study_id}/{name}/view"):
        Rule(frozenset({"doctor", "specialist"}), CARE),
    ("GET", "/console/consults/{consult_id}/studies/{study_id}/{name}/ecg"):
        Rule(frozenset({"doctor", "specialist"}), CARE),
    ("POST", "/console/consults/{consult_id}/report-draft"): Rule(frozenset({"specialist"}), CARE),
    ("POST", "/console/consults/{consult_id}/report"): Rule(frozenset({"specialist"}), CARE),
    # the consortium at a glance (no patient data)
    ("GET", "/api/consortium"): Rule(EVERYONE),
    ("GET", "/api/consortium/sites/{site_id}"): Rule(EVERYONE),
    ("GET", "/api/quality"): Rule(ADMINS, OPERATIONS),
    ("GET", "/api/consortium/sites/{site_id}/quality"): Rule(ADMINS, OPERATIONS),
    ("GET", "/api/archive/sync"): Rule(ADMINS | {"auditor"}, OPERATIONS),
    # terminology (codes, no patient data)
    ("GET", "/fhir/ConceptMap/$translate"): Rule(EVERYONE, scope=("ConceptMap", "read")),
    ("POST", "/fhir/ConceptMap/$translate"): Rule(EVERYONE, scope=("ConceptMap", "read")),
    ("POST", "/fhir/Condition/$normalize"): Rule(EVERYONE, scope=("Condition", "read")),
    # the master patient index: who is who, for care
    ("GET", "/fhir/Patient/$ihe-pix"): Rule(CLINICIANS, CARE, ("Patient", "read")),
    ("GET", "/fhir/Patient"): Rule(CLINICIANS, CARE, ("Patient", "read")),
    ("GET", "/fhir/Person/{person_id}"): Rule(CLINICIANS, CARE, ("Person", "read")),
    ("GET", "/api/identity/persons/{person_id}"):
        Rule(CLINICIANS | {"regional-admin"}, CARE | OPERATIONS, ("Person", "read")),
    ("GET", "/api/identity/records/{site_id}/{record_id}/person"):
        Rule(CLINICIANS | {"regional-admin"}, CARE | OPERATIONS, ("Person", "read")),
    ("GET", "/api/identity/counts"): Rule(ADMINS | {"auditor"}, OPERATIONS),
    # the EMPI review queue: the regional administrator compares two records' demographics
    # and decides (accept, reject), or splits a wrongly linked record
    ("GET", "/api/identity/review"): Rule(REGIONAL, OPERATIONS, ("Person", "read")),
    ("GET", "/api/identity/review/{item_id}"): Rule(REGIONAL, OPERATIONS, ("Patient", "read")),
    ("POST", "/api/identity/review/{item_id}/accept"):
        Rule(REGIONAL, OPERATIONS, ("Person", "write")),
    ("POST", "/api/identity/review/{item_id}/reject"):
        Rule(REGIONAL, OPERATIONS, ("Person", "write")),
    ("POST", "/api/identity/records/{site_id}/{record_id}/split"):
        Rule(REGIONAL, OPERATIONS, ("Person", "write")),
    # the regional archive: a person's record across sites, for their care (the archive's
    # access policy then asks for a care relationship or break-glass, and the Consent)
    ("GET", "/fhir/Patient/{some_id}/$everything"): Rule(CLINICIANS, CARE, ("Patient", "read")),
    ("GET", "/fhir/Patient/{some_id}/$summary"): Rule(CLINICIANS, CARE, ("Patient", "read")),
    ("GET", "/api/archive/persons/{some_id}/summary"):
        Rule(CLINICIANS, CARE, ("Patient", "read")),
    ("GET", "/api/archive/persons/{some_id}/record"):
        Rule(CLINICIANS, CARE, ("Patient", "read")),
    **{("GET", f"/fhir/{t}"): Rule(CLINICIANS, CARE, (t, "read")) for t in (
        "AllergyIntolerance", "Condition", "DiagnosticReport", "DocumentReference",
        "Encounter", "MedicationRequest", "Observation")},
    ("POST", "/fhir/Consent"): Rule(CLINICIANS, CARE, ("Consent", "write")),
    ("GET", "/fhir/Consent/{consent_id}"): Rule(CLINICIANS, CARE, ("Consent", "read")),
    # two-way referral: staff see their own site's referrals, a regional administrator all
    # of them; doctors and specialists send them (the site is the token's); the state
    # machine then says which party and role may make which move
    ("GET", "/fhir/Task"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS, ("Task", "read")),
    ("GET", "/fhir/Task/{task_id}"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS,
                                          ("Task", "read")),
    ("GET", "/fhir/ServiceRequest"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS,
                                          ("ServiceRequest", "read")),
    ("GET", "/fhir/ServiceRequest/{request_id}"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS,
                                                       ("ServiceRequest", "read")),
    ("GET", "/api/referrals/turnaround"): Rule(ADMINS | {"auditor"}, OPERATIONS),
    ("GET", "/api/referrals/alerts"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS),
    ("GET", "/api/referrals/options"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS),
    ("POST", "/api/referrals"): Rule(frozenset({"doctor", "specialist"}), CARE,
                                     ("Task", "write")),
    # the packet is the patient's clinical record: clinicians, for care
    ("POST", "/api/referrals/packet-preview"): Rule(frozenset({"doctor", "specialist"}), CARE,
                                                    ("Patient", "read")),
    ("GET", "/api/referrals/{task_id}"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS,
                                              ("Task", "read")),
    ("GET", "/api/referrals/{task_id}/packet"): Rule(CLINICIANS, CARE, ("Patient", "read")),
    ("POST", "/api/referrals/{task_id}/{action}"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS,
                                                        ("Task", "write")),
    # remote consultation: clinicians request, specialists of a pool claim and report,
    # regional administrators oversee; the service then checks party, pool and state
    ("GET", "/api/consults"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS, ("Task", "read")),
    ("POST", "/api/consults"): Rule(frozenset({"doctor", "specialist"}), CARE,
                                    ("Task", "write")),
    ("GET", "/api/consults/alerts"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS),
    ("GET", "/api/consults/turnaround"): Rule(ADMINS | {"auditor"}, OPERATIONS),
    ("GET", "/api/consults/{consult_id}"): Rule(CLINICIANS | ADMINS, CARE | OPERATIONS,
                                                ("Task", "read")),
    ("GET", "/api/consults/{consult_id}/studies"): Rule(CLINICIANS | ADMINS,
                                                        CARE | OPERATIONS, ("Task", "read")),
    ("POST", "/api/consults/{consult_id}/{action}"):
        Rule(CLINICIANS | {"site-admin", "regional-admin"}, CARE | OPERATIONS,
             ("Task", "write")),
    ("GET", "/api/consults/{consult_id}/studies/{study_id}/{name}"):
        Rule(frozenset({"doctor", "specialist"}), CARE, ("ImagingStudy", "read")),
    ("GET", "/api/consults/{consult_id}/studies/{study_id}/{name}/view"):
        Rule(frozenset({"doctor", "specialist"}), CARE, ("ImagingStudy", "read")),
    # the next report version for the specialist to sign in the browser (nothing stored)
    ("POST", "/api/consults/{consult_id}/report-draft"):
        Rule(frozenset({"specialist"}), CARE, ("DiagnosticReport", "write")),
    ("GET", "/fhir/PractitionerRole"): Rule(EVERYONE, scope=("PractitionerRole", "read")),
    # the audit trail: administrators' reports; tree heads and proofs for checking it
    ("GET", "/api/audit/report"): Rule(frozenset({"auditor", "regional-admin"}), OPERATIONS),
    ("GET", "/fhir/AuditEvent/{leaf}"): Rule(frozenset({"auditor", "regional-admin"}),
                                             OPERATIONS, ("AuditEvent", "read")),
    ("GET", "/api/audit/tree-head"): Rule(ADMINS | {"auditor"}, OPERATIONS),
    ("GET", "/api/audit/proof/{leaf}"): Rule(ADMINS | {"auditor"}, OPERATIONS),
    # the audit console: search, flagged anomalies, verification now / last result, and
    # the exchange dashboard (no demographics; patients as hashes)
    ("GET", "/api/audit/events"): Rule(AUDITORS, OPERATIONS, ("AuditEvent", "read")),
    ("GET", "/api/audit/anomalies"): Rule(AUDITORS, OPERATIONS),
    ("GET", "/api/audit/verify"): Rule(AUDITORS, OPERATIONS),
    ("POST", "/api/audit/verify"): Rule(AUDITORS, OPERATIONS),
    ("GET", "/api/dashboard/exchanges"): Rule(AUDITORS, OPERATIONS),
    # research export (FHIR Bulk Data), de-identified: regional administrators only
    ("GET", "/fhir/Patient/$export"): Rule(frozenset({"regional-admin"}), frozenset({"HRESCH"})),
    ("GET", "/fhir/$export-status/{job_id}"):
        Rule(frozenset({"regional-admin"}), frozenset({"HRESCH"})),
    ("DELETE", "/fhir/$export-status/{job_id}"):
        Rule(frozenset({"regional-admin"}), frozenset({"HRESCH"})),
    ("GET", "/fhir/$export-file/{job_id}/{resource_type}/{part}"):
        Rule(frozenset({"regional-admin"}), frozenset({"HRESCH"})),
}


def rule_for(method: str, path: str) -> Rule | None:
    return HTTP_AUTHZ.get((method.upper(), path))


def authorize(rule: Rule, claims: StaffClaims, *, what: str) -> None:
    """Raise :class:`PermissionDenied`, saying what would be allowed, unless ``claims``
    satisfy ``rule``."""
    if not rule.roles & claims.roles:
        raise PermissionDenied(
            f"{what} is for {', '.join(sorted(rule.roles))}; your roles are "
            f"{', '.join(sorted(claims.roles))}")
    if claims.purpose not in rule.purposes:
        raise PermissionDenied(
            f"{what} may be used for {', '.join(sorted(rule.purposes))}, not for purpose "
            f"{claims.purpose}; sign in again with the purpose you have")
    if rule.scope is not None:
        claims.require(*rule.scope)
