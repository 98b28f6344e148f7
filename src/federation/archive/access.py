"""Who may read a person's regional record, and which parts: one pure decision.

Every cross-site read of the archive (``$everything``, search, summary) is decided here
before any resource is touched, from four facts gathered by the caller:

* the :class:`Reader` — a person signed in over HTTP (bearer token) or a node's site over
  gRPC (its certificate), converted at the edge; with a purpose of use (HL7 v3
  ActReason) and, for break-glass, a reason;
* the sites that hold records of the person (the EMPI's cross references);
* the sites that have a care relationship with the person (:mod:`federation.archive.care`:
  an active referral or consult, or a recent encounter);
* the patient's active Consents (:mod:`federation.archive.consent`) as
  :class:`ConsentRule` exclusions of sites and/or categories (resource types).

Rules, in order (the first that fails refuses the whole read, with a message that says
what to do and carries no patient data):

1. a purpose of use is required, and it must be a clinical one (TREAT, COC, ETREAT):
   research, operations and audit read through their own channels (export, reports);
2. people need a clinical role (doctor, specialist, nurse); ETREAT needs a reason;
3. the reader's site must have a care relationship with the person — or the reader
   breaks the glass (ETREAT + reason), which is allowed and flagged for review in the
   exchange log;
4. the patient's Consent removes excluded sites/categories from what is returned — even
   under break-glass (an explicit refusal by the patient outranks an emergency read
   here; the reader is told that some records are withheld, not which). Records held by
   the reader's own site are never withheld from it: it has them already.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from federation.gateway.fanout import Requester

__all__ = [
    "CLINICAL_PURPOSES",
    "CLINICAL_ROLES",
    "ConsentRule",
    "Decision",
    "Reader",
    "decide",
]

CLINICAL_PURPOSES = frozenset({"TREAT", "COC", "ETREAT"})
CLINICAL_ROLES = frozenset({"doctor", "specialist", "nurse"})


@dataclass(frozen=True, slots=True)
class Reader:
    """Whoever reads, as the archive sees them (from a token or a node certificate)."""

    kind: str                       # "user" (HTTP, token) | "node" (gRPC, certificate)
    id: str                         # the user id, or the practitioner id at the node
    site_id: str
    purpose: str | None
    roles: frozenset[str] = frozenset()
    reason: str | None = None

    @property
    def break_glass(self) -> bool:
        return self.purpose == "ETREAT" and bool(self.reason and self.reason.strip())

    def requester(self) -> Requester:
        return Requester(kind=self.kind, id=self.id, site=self.site_id)


@dataclass(frozen=True, slots=True)
class ConsentRule:
    """One exclusion from a patient's Consent: records at ``sites`` (empty: every site)
    of ``categories`` (resource types; empty: every category). Both empty: everything."""

    consent_id: str
    sites: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    def excludes(self, site_id: str, resource_type: str) -> bool:
        return ((not self.sites or site_id in self.sites)
                and (not self.categories or resource_type in self.categories))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str                     # why refused, or on what basis allowed (no PHI)
    basis: str = ""                 # care-relationship | break-glass | own-site
    reader_site: str = ""
    rules: tuple[ConsentRule, ...] = field(default=())

    def permits(self, site_id: str, resource_type: str) -> bool:
        """May this site's resource of this type be shown to the reader?"""
        if not self.allowed:
            return False
        if site_id == self.reader_site:
            return True
        return not any(r.excludes(site_id, resource_type) for r in self.rules)

    @property
    def restricted(self) -> bool:
        """Does the patient's Consent withhold anything from this reader?"""
        return bool(self.rules)


def _refuse(reason: str) -> Decision:
    return Decision(False, reason)


def decide(reader: Reader, record_sites: Iterable[str], caring_sites: Iterable[str],
           consent: Iterable[ConsentRule], *, window_days: int | None = None) -> Decision:
    """Decide one read of a person's record (see the module docstring for the rules)."""
    if not reader.purpose:
        return _refuse("a purpose of use is required to read a person's regional record "
                       "(TREAT, COC, or ETREAT with a reason for break-glass)")
    if reader.purpose not in CLINICAL_PURPOSES:
        return _refuse(f"purpose of use {reader.purpose} does not permit reading a clinical "
                       "record; use TREAT, COC or ETREAT (research uses the de-identified "
                       "export)")
    if reader.kind == "user" and not reader.roles & CLINICAL_ROLES:
        return _refuse(f"reading clinical records needs one of the roles "
                       f"{', '.join(sorted(CLINICAL_ROLES))}")
    if reader.purpose == "ETREAT" and not reader.break_glass:
        return _refuse("break-glass (ETREAT) needs a reason")
    rules = tuple(consent)
    sites = set(record_sites)
    others = sites - {reader.site_id}
    if reader.site_id in set(caring_sites):
        basis = "care-relationship"
    elif reader.break_glass:
        basis = "break-glass"
    elif not others and sites:
        basis = "own-site"
    else:
        window = f" within {window_days} days" if window_days else ""
        return _refuse(
            f"site {reader.site_id} has no care relationship with this person (no active "
            f"referral or consult, no encounter{window}); in an emergency, read with "
            "purpose ETREAT and a reason (break-glass, reviewed afterwards)")
    return Decision(True, f"allowed by {basis}", basis, reader.site_id, rules)
