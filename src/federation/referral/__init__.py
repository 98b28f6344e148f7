"""Two-way referral (双向转诊): upward (township → county → city; emergencies straight to
the city) and downward (with a discharge summary and a follow-up plan), closed-loop in the
spirit of IHE 360X, on the shared workflow machinery (:mod:`federation.workflow`).

* :mod:`.rules` + ``consortium.toml`` — who may refer to whom, time limits, reject reasons;
* :mod:`.state` — the referral's states and its one table of allowed moves;
* :mod:`.fhir` — ServiceRequest, Task, Consent, Appointment, DocumentReference, CarePlan;
* :mod:`.moves` — what each move writes and whom it tells (pure);
* the packet from the origin node — :mod:`federation.workflow.packet` (shared);
* :mod:`.service` — create, move, read, search, close the loop, escalate;
* :mod:`.servicer` / :mod:`.wire` / :mod:`.client` — gRPC ``Referrals``;
* :mod:`.http` — FHIR search and read of Task and ServiceRequest;
* :mod:`.cli` — ``federation referral …``.

Importing the package registers referrals with the archive's care sources
(:func:`federation.workflow.care.register_workflow`).
"""

from federation.referral.moves import Details
from federation.referral.rules import ReferralRules, load_rules
from federation.referral.service import WORKFLOW, NewReferral, ReferralService, ReferralView
from federation.referral.state import DOWNWARD, UPWARD, ReferralState, table_for
from federation.workflow.care import register_workflow

# an open (or recently completed) referral gives both its sites a care relationship with
# the person in the regional archive, and makes critical results reach them
register_workflow(WORKFLOW)

__all__ = ["Details", "DOWNWARD", "NewReferral", "ReferralRules", "ReferralService",
           "ReferralState", "ReferralView", "UPWARD", "load_rules", "table_for"]
