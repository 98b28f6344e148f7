"""Remote consultation (远程会诊): specialists at hub sites take cases from any site of the
consortium, studies stream from where they are kept, reports come back signed — on the
workflow machinery the referral uses (:mod:`federation.workflow`).

* :mod:`.rules` + ``consult.toml`` — kinds, specialist pools, slots, time limits;
* :mod:`.state` — the consult's states and its one table of allowed moves;
* :mod:`.fhir` — ServiceRequest, Task, Appointment, PractitionerRole;
* :mod:`.report` — the signed DiagnosticReport, its Provenance, verification;
* :mod:`.studies` — study manifests, chunked reading, resumable checked download;
* :mod:`.moves` — what each move writes and whom it tells (pure);
* :mod:`.service` — request, move, report, read, inbox, fetch a study, escalate;
* :mod:`.servicer` / :mod:`.wire` / :mod:`.client` — gRPC ``Consults``;
* :mod:`.node` / :mod:`.sources` — the nodes' ``StudySource`` and the gateway's client;
* :mod:`.http` — FHIR reads and search; :mod:`.cli` — ``federation consult …``.

Importing the package registers consults with the archive's care sources.
"""

from federation.consult.rules import ConsultRules, Pool, load_rules
from federation.consult.state import TABLE, ConsultState
from federation.workflow.care import register_workflow

WORKFLOW = "consult"
# an open consult gives both its sites a care relationship with the person
register_workflow(WORKFLOW)

__all__ = ["ConsultRules", "ConsultState", "Pool", "TABLE", "WORKFLOW", "load_rules"]
