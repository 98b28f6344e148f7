"""Conversions between protobuf messages and domain records — the only place they meet.

Servicers and clients call these at the edge; nothing past them sees a ``_pb2``.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from federation._proto.v1 import common_pb2
from federation.envelope import Envelope
from federation.errors import InvalidInput
from federation.nodes.model import PatientQuery

__all__ = [
    "TIER_TO_PROTO",
    "TIER_FROM_PROTO",
    "envelope_to_proto",
    "envelope_from_proto",
    "query_to_proto",
    "query_from_proto",
    "timestamp",
    "from_timestamp",
]

TIER_TO_PROTO = {
    "township": common_pb2.TIER_TOWNSHIP,
    "county": common_pb2.TIER_COUNTY,
    "city": common_pb2.TIER_CITY,
}
TIER_FROM_PROTO = {v: k for k, v in TIER_TO_PROTO.items()}
_GENDERS = ("male", "female", "other", "unknown")
MAX_QUERY_LIMIT = 500


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def from_timestamp(ts: Timestamp) -> dt.datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)


def envelope_to_proto(env: Envelope) -> common_pb2.FhirResource:
    msg = common_pb2.FhirResource(
        resource_type=env.resource_type,
        id=env.id,
        version_id=env.version_id,
        site_id=env.site_id,
        json=env.json,
    )
    if env.last_updated is not None:
        msg.last_updated.CopyFrom(timestamp(env.last_updated))
    return msg


def envelope_from_proto(msg: common_pb2.FhirResource) -> Envelope:
    return Envelope(
        resource_type=msg.resource_type,
        id=msg.id,
        site_id=msg.site_id,
        json=msg.json,
        version_id=msg.version_id,
        last_updated=from_timestamp(msg.last_updated) if msg.HasField("last_updated") else None,
    )


def query_to_proto(q: PatientQuery) -> common_pb2.PatientQuery:
    return common_pb2.PatientQuery(
        name=q.name or "",
        family=q.family or "",
        given=q.given or "",
        birth_date=q.birth_date.isoformat() if q.birth_date else "",
        gender=q.gender or "",
        identifier=q.identifier or "",
        phone=q.phone or "",
        limit=q.limit,
    )


def query_from_proto(msg: common_pb2.PatientQuery, *, default_limit: int = 50) -> PatientQuery:
    """Build a domain query, refusing malformed fields with a message that names them."""
    birth = None
    if msg.birth_date:
        try:
            birth = dt.date.fromisoformat(msg.birth_date)
        except ValueError:
            raise InvalidInput(f"birth_date must be YYYY-MM-DD, got {msg.birth_date!r}") from None
    if msg.gender and msg.gender not in _GENDERS:
        raise InvalidInput(f"gender must be one of {', '.join(_GENDERS)}, got {msg.gender!r}")
    if msg.limit > MAX_QUERY_LIMIT:
        raise InvalidInput(f"limit may be at most {MAX_QUERY_LIMIT}, got {msg.limit}")
    query = PatientQuery(
        name=msg.name.strip() or None,
        family=msg.family.strip() or None,
        given=msg.given.strip() or None,
        birth_date=birth,
        gender=msg.gender or None,  # type: ignore[arg-type]
        identifier=msg.identifier.strip() or None,
        phone=msg.phone.strip() or None,
        limit=msg.limit or default_limit,
    )
    if query.is_empty():
        raise InvalidInput("a patient search needs at least one criterion (name, identifier, "
                           "birth_date, gender, phone)")
    return query
