"""Exchange-log rows as FHIR R4 AuditEvents, in the spirit of IHE BALP (Basic Audit Log
Patterns) and ATNA, and their canonical bytes — the leaves of the Merkle log.

One exchange becomes one AuditEvent:

* ``type`` — DICOM ``110112`` Query for reads and searches, ``110106`` Export for the
  change-feed pull, ``rest`` for everything else; ``subtype`` — the operation
  (``urn:federation:operation`` ``Gateway/SearchPatients``);
* ``action`` R (read) / E (execute) from the operation; ``recorded`` — when it ended;
* ``outcome`` — 0 success, 4 refused or not found (minor failure), 8 error or timeout;
  ``outcomeDesc`` — the status code and a message that never holds patient data;
* ``purposeOfEvent`` — the HL7 v3 PurposeOfUse the requester gave (``ETREAT`` is
  break-glass);
* ``agent`` — the requester (certificate name, kind as ``type``, its site as
  ``location``), ``requestor: true``; the answering site as custodian, ``requestor: false``;
* ``source`` — the gateway (``security-source-type`` 4, application server);
* ``entity`` — the patient as a *pseudonymous* identifier (the hash the exchange log
  keeps, ``urn:federation:patient-hash``; never a name or ID number) with role Patient;
  and the exchange itself (correlation id, exchange-log id, records, duration).

The leaf's ``id`` is its index in the log, so a leaf moved to another position no
longer matches where it stands. Canonical bytes are compact JSON with sorted keys and
UTF-8 text; they are what is hashed, stored and handed to nodes, so a node can parse the
very bytes it holds a receipt for. Pure: no I/O, no FHIR model construction on the hot
path (tests validate every rendering against ``fhir.resources.R4B``).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # the store imports this module to append; no cycle at run time
    from federation.store.models import ExchangeEntry

__all__ = ["OPERATION_SYSTEM", "PATIENT_HASH_SYSTEM", "BREAK_GLASS", "action_of",
           "audit_event", "canonical", "parties"]

OPERATION_SYSTEM = "urn:federation:operation"
PATIENT_HASH_SYSTEM = "urn:federation:patient-hash"
SITE_SYSTEM = "urn:federation:site"
BREAK_GLASS = "ETREAT"

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_QUERY = {"system": _DCM, "code": "110112", "display": "Query"}
_EXPORT = {"system": _DCM, "code": "110106", "display": "Export"}
_REST = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
         "display": "RESTful Operation"}
_READS = ("Search", "Find", "Read", "Resolve", "Get", "$ihe-pix", "?search", "/read")
_OUTCOME = {"ok": "0", "refused": "4", "error": "8", "timeout": "8"}
_NOT_FOUND = ("NOT_FOUND", "not-found", "unknown-site")
_SOURCE = {
    "site": "federation-gateway",
    "observer": {"identifier": {"system": "urn:federation:gateway", "value": "gateway"}},
    "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
              "code": "4", "display": "Application Server"}],
}
_PATIENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                 "code": "1", "display": "Person"}
_PATIENT_ROLE = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                 "display": "Patient"}
_OBJECT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2", "display": "System Object"}
_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_CUSTODIAN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                          "code": "CST", "display": "custodian"}]}
_REQUESTER_TYPE = "urn:federation:requester-kind"


@functools.lru_cache(maxsize=512)      # a few dozen operations; rendered for every leaf
def _kind(operation: str) -> tuple[dict[str, str], str]:
    if operation.endswith("StreamChanges"):
        return _EXPORT, "R"
    if any(part in operation for part in _READS):
        return _QUERY, "R"
    return _REST, "E"


def action_of(operation: str) -> str:
    """The AuditEvent action of an operation: R (read) or E (execute)."""
    return _kind(operation)[1]


def _instant(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def audit_event(entry: ExchangeEntry, exchange_id: int | None, index: int) -> dict[str, Any]:
    """The AuditEvent (FHIR R4 JSON as a dict) recording ``entry`` as leaf ``index``."""
    event_type, action = _kind(entry.operation)
    outcome = _OUTCOME[entry.outcome]
    if entry.outcome == "error" and entry.status_code in _NOT_FOUND:
        outcome = "4"
    requester: dict[str, Any] = {
        "type": {"coding": [{"system": _REQUESTER_TYPE, "code": entry.requester_kind}]},
        "who": {"identifier": {"system": f"urn:federation:{entry.requester_kind}",
                               "value": entry.requester_id}},
        "requestor": True,
    }
    if entry.requester_site:
        requester["location"] = {"identifier": {"system": SITE_SYSTEM,
                                                "value": entry.requester_site}}
    agents = [requester]
    if entry.target_site:
        agents.append({"type": _CUSTODIAN, "requestor": False,
                       "who": {"identifier": {"system": SITE_SYSTEM,
                                              "value": entry.target_site}}})
    details = [{"type": "correlation-id", "valueString": entry.correlation_id},
               {"type": "records", "valueString": str(entry.records)},
               {"type": "duration-ms", "valueString": f"{entry.duration_ms:.1f}"}]
    if exchange_id is not None:
        details.insert(0, {"type": "exchange-id", "valueString": str(exchange_id)})
    entities: list[dict[str, Any]] = []
    if entry.patient_ref:
        entities.append({"what": {"identifier": {"system": PATIENT_HASH_SYSTEM,
                                                 "value": entry.patient_ref}},
                         "type": _PATIENT_TYPE, "role": _PATIENT_ROLE})
    entities.append({"what": {"identifier": {"system": OPERATION_SYSTEM,
                                             "value": entry.operation}},
                     "type": _OBJECT_TYPE, "detail": details})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(index),
        "type": event_type,
        "subtype": [{"system": OPERATION_SYSTEM, "code": entry.operation}],
        "action": action,
        "recorded": _instant(entry.at),
        "outcome": outcome,
        "outcomeDesc": (f"{entry.status_code}: {entry.detail}" if entry.detail
                        else entry.status_code),
        "agent": agents,
        "source": _SOURCE,
        "entity": entities,
    }
    if entry.purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": _PURPOSE, "code": entry.purpose}]}]
    return event


def canonical(event: Mapping[str, Any]) -> bytes:
    """The leaf bytes: compact, key-sorted UTF-8 JSON — byte for byte what
    ``json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":"))`` gives
    for these events (strings and integers only), written by orjson, which is ~25x faster
    on the append path of every exchange and in ``verify``."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def parties(entry: ExchangeEntry) -> set[str]:
    """The sites whose nodes took part (and so receive the leaf's receipt): the target
    site, and the requester's site when a node asked."""
    out = {entry.target_site} if entry.target_site else set()
    if entry.requester_kind == "node" and entry.requester_site:
        out.add(entry.requester_site)
    return out
