"""A FHIR resource in transit: routing facts plus the FHIR JSON, validated at each edge.

Nodes validate what they map before serving it; the gateway validates again what it
receives, because a node is another institution's software. Validation uses the
``fhir.resources`` R4B models (wire-compatible with R4 for the resources we carry).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from federation.errors import InvalidInput, PayloadTooLarge

__all__ = ["Envelope", "MAX_RESOURCE_BYTES", "patient_of", "validate_resource"]

#: a single resource larger than this is refused (whole studies travel as chunked streams)
MAX_RESOURCE_BYTES = 2 * 1024 * 1024
#: digests of resource JSON that passed the FHIR models, most recent last: the same bytes
#: reach the gateway again and again (a patient's record synced, then fetched for each
#: referral packet, consult and federated read), and validating them with the models is
#: the costly part of every check; the checks of the envelope's claims are always made
VALIDATED_KEPT = 100_000
_VALIDATED: dict[bytes, None] = {}
_VALIDATED_LOCK = threading.Lock()
#: the element naming the Patient a resource is about, where it is not ``subject``
_SUBJECT = {"AllergyIntolerance": "patient"}


@dataclass(frozen=True, slots=True)
class Envelope:
    resource_type: str
    id: str
    site_id: str
    json: bytes
    version_id: str = ""
    last_updated: dt.datetime | None = None

    @classmethod
    def from_resource(cls, site_id: str, resource: dict[str, Any]) -> Envelope:
        """Wrap an already validated FHIR dict (as produced by the node's mapping)."""
        meta = resource.get("meta") or {}
        updated = meta.get("lastUpdated")
        return cls(
            resource_type=resource["resourceType"],
            id=resource["id"],
            site_id=site_id,
            json=json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode(),
            version_id=str(meta.get("versionId", "")),
            last_updated=dt.datetime.fromisoformat(updated) if updated else None,
        )

    @classmethod
    def from_json(cls, site_id: str, resource_type: str, resource_id: str,
                  body: bytes) -> Envelope:
        """Wrap FHIR JSON stored earlier from :meth:`from_resource` (the same envelope)."""
        meta = json.loads(body).get("meta") or {}
        updated = meta.get("lastUpdated")
        return cls(resource_type, resource_id, site_id, body,
                   version_id=str(meta.get("versionId", "")),
                   last_updated=dt.datetime.fromisoformat(updated) if updated else None)

    def resource(self) -> dict[str, Any]:
        return json.loads(self.json)


def patient_of(resource_type: str, data: dict[str, Any]) -> str | None:
    """The id of the Patient a resource is about (``subject``, or ``patient`` for an
    AllergyIntolerance, when it references ``Patient/<id>``); None for a Patient."""
    if resource_type == "Patient":
        return None
    ref = (data.get(_SUBJECT.get(resource_type, "subject")) or {}).get("reference", "")
    return ref.removeprefix("Patient/") if isinstance(ref, str) and ref.startswith(
        "Patient/") else None


def validate_resource(env: Envelope) -> dict[str, Any]:
    """Check that an envelope holds the FHIR resource it claims to; return it as a dict.

    Raises :class:`InvalidInput` naming the site, type and id (never the content) when the
    bytes are not JSON, not an object, of another type or id than the envelope says, or
    not valid FHIR R4.
    """
    where = f"{env.resource_type}/{env.id or '?'} from site {env.site_id}"
    if len(env.json) > MAX_RESOURCE_BYTES:
        raise PayloadTooLarge(f"{where} is {len(env.json)} bytes, over the {MAX_RESOURCE_BYTES} limit")
    try:
        data = json.loads(env.json)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{where} is not valid JSON ({exc.__class__.__name__} at {_pos(exc)})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} is not a JSON object")
    if data.get("resourceType") != env.resource_type:
        raise InvalidInput(f"{where} says resourceType {data.get('resourceType')!r}")
    if data.get("id") != env.id:
        raise InvalidInput(f"{where} carries a different id in its JSON")
    digest = hashlib.blake2b(env.json, digest_size=16).digest()
    if digest in _VALIDATED:
        return data                # these very bytes passed the models before
    try:
        model = get_fhir_model_class(env.resource_type)
    except KeyError:
        raise InvalidInput(f"{where}: {env.resource_type!r} is not a FHIR R4 resource type") from None
    try:
        model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})[:5]
        raise InvalidInput(f"{where} is not valid FHIR R4 (problem at: {', '.join(fields)})") from None
    with _VALIDATED_LOCK:
        if len(_VALIDATED) >= VALIDATED_KEPT:
            _VALIDATED.pop(next(iter(_VALIDATED)), None)     # the oldest
        _VALIDATED[digest] = None
    return data


def _pos(exc: Exception) -> str:
    return f"char {getattr(exc, 'pos', getattr(exc, 'start', '?'))}"
