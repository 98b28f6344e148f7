"""The referral packet: what the target needs to know about the patient, fetched from
the origin node over gRPC with a deadline (``NodeAgent.FetchPatientResources``).

The packet keeps the patient, every problem (Condition) and allergy, and the most recent
encounters, labs and vital signs, medications, imaging studies, reports and documents —
the summary a receiving clinician reads, not the whole history. It travels as a FHIR
Bundle (type ``collection``) with the referral's Task, ServiceRequest and Consent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

from federation.envelope import Envelope, validate_resource
from federation.errors import NotFound, Unavailable
from federation.gateway.node_clients import NodeClients
from federation.store import GatewayStore

__all__ = ["PACKET_TYPES", "RECENT", "select_recent", "fetch_packet"]

PACKET_TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest",
                "AllergyIntolerance", "ImagingStudy", "DiagnosticReport", "DocumentReference")
#: the newest N of each type; types not named here are kept whole
RECENT = {"Encounter": 10, "Observation": 50, "MedicationRequest": 20, "ImagingStudy": 10,
          "DiagnosticReport": 20, "DocumentReference": 10}


def _when(resource: dict[str, Any]) -> str:
    for path in (("period", "start"), ("effectiveDateTime",), ("issued",), ("authoredOn",),
                 ("started",), ("date",), ("recordedDate",)):
        node: Any = resource
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            return node
    return ""


def select_recent(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patient first, then each type in :data:`PACKET_TYPES` order, newest first, cut
    to :data:`RECENT`."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r.get("resourceType", ""), []).append(r)
    out: list[dict[str, Any]] = []
    for kind in PACKET_TYPES:
        items = sorted(by_type.get(kind, []), key=_when, reverse=True)
        out.extend(items[:RECENT[kind]] if kind in RECENT else items)
    return out


async def fetch_packet(store: GatewayStore, clients: NodeClients, site_id: str,
                       patient_id: str, *, deadline_s: float,
                       purpose: str = "TREAT") -> list[dict[str, Any]]:
    """The packet's clinical resources from ``site_id``'s node, each validated as FHIR
    R4 in a worker thread (not on the event loop). Unavailable when the node is not online
    or misses the deadline; NotFound when it has no such patient."""
    node = await asyncio.to_thread(store.get_node, site_id)
    if node is None or node.state != "online":
        state = "has never registered" if node is None else f"is {node.state}"
        raise Unavailable(f"site {site_id}'s node {state}: the referral packet is read from "
                          "it, and follows the referral once the node is online")
    envelopes = [env async for env in clients.fetch(
        site_id, node.endpoint, patient_id, resource_types=list(PACKET_TYPES),
        correlation_id=uuid.uuid4().hex, purpose=purpose, timeout=deadline_s, validate=False)]
    found = await asyncio.to_thread(_validated, envelopes)
    if not any(r.get("resourceType") == "Patient" and r.get("id") == patient_id for r in found):
        raise NotFound(f"site {site_id} has no Patient/{patient_id}")
    return select_recent(found)


def _validated(envelopes: list[Envelope]) -> list[dict[str, Any]]:
    return [validate_resource(env) for env in envelopes]
