"""The EMPI review queue on the gateway's JSON API, for the regional administrator.

* ``GET /api/identity/review?_count=&_offset=`` → ``{total, offset, count, items: [{id,
  record: {site_id, record_id}, candidate: {site_id, record_id}, candidate_person_id,
  weight, reason, status, created_at}]}`` — open items, strongest first;
* ``GET /api/identity/review/{item_id}`` → ``{item, records: [record, candidate],
  comparison: {fields: [{field, a, b, level, meaning, weight}], prior_weight,
  total_weight, probability, guards, decision, thresholds: {upper, lower}}, persons:
  [{person_id, merged_into, records: [...]}]}`` (:mod:`federation.identity.review`);
* ``POST /api/identity/review/{item_id}/accept`` → ``{item_id, status: "accepted",
  person_id, record}``: the record joins the candidate's person;
* ``POST /api/identity/review/{item_id}/reject`` → ``{item_id, status: "rejected"}``:
  "not the same person", remembered for good;
* ``POST /api/identity/records/{site_id}/{record_id}/split`` → ``{record, person_id,
  previous_person_id}``: the record leaves its person for a new one of its own.

The decisions are the identity store's own (history kept, pins, no-match memory);
errors: 404 unknown item or record, 409 an item already decided or a split that cannot
be, 400 bad parameters. Every call is one exchange-log row naming the record only by its
hash: the demographics shown here are the administrator's to see, never the log's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from federation.archive.read import patient_ref
from federation.errors import InvalidInput, NotFound
from federation.gateway.auth_api import claims_of, requester_of
from federation.gateway.params import int_param, query
from federation.identity.index import RecordRef
from federation.identity.lookup import logged
from federation.identity.review import review_item_json
from federation.identity.store import IdentityStore, ReviewItem
from federation.store import GatewayStore

__all__ = ["create_review_router"]

MAX_COUNT = 200


def _item_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInput(f"a review item id is a positive whole number, not '{raw[:40]}'")
    return value


def _ref(r: RecordRef) -> dict[str, str]:
    return {"site_id": r.site_id, "record_id": r.record_id}


def _summary(i: ReviewItem) -> dict[str, Any]:
    return {"id": i.id, "record": _ref(i.record), "candidate": _ref(i.candidate),
            "candidate_person_id": i.candidate_person_id, "weight": i.weight,
            "reason": i.reason, "status": i.status, "created_at": i.created_at.isoformat()}


def _actor(request: Request) -> str:
    claims = claims_of(request)
    return f"{claims.site_id}/{claims.user_id}"


def create_review_router(identity: IdentityStore, *,
                         store: GatewayStore | None = None) -> APIRouter:
    router = APIRouter()

    @router.get("/api/identity/review")
    async def queue(request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Identity/GetReviewQueue") as note:
            q = query(request, ("_count", "_offset"))
            count = int_param(q.get("_count"), "_count", 20, 1, MAX_COUNT)
            offset = int_param(q.get("_offset"), "_offset", 0, 0, 10**9)
            items = await asyncio.to_thread(identity.review_queue, limit=count, offset=offset)
            total = await asyncio.to_thread(identity.review_count)
            note.records = len(items)
            return {"total": total, "offset": offset, "count": count,
                    "items": [_summary(i) for i in items]}

    @router.get("/api/identity/review/{item_id}")
    async def item(item_id: str, request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Identity/GetReviewItem") as note:
            query(request, ())
            pair = await asyncio.to_thread(identity.review_pair, _item_id(item_id))
            note.patient_ref = patient_ref(pair.record.ref.site_id, pair.record.ref.record_id)
            note.records = 2
            body = review_item_json(pair)
            persons = dict.fromkeys(p for p in (pair.record.person_id,
                                                pair.candidate.person_id,
                                                pair.item.candidate_person_id) if p)
            body["persons"] = [await _person(identity, p) for p in persons]
            return body

    @router.post("/api/identity/review/{item_id}/accept")
    async def accept(item_id: str, request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Identity/ReviewAccept") as note:
            query(request, ())
            number = _item_id(item_id)
            pair = await asyncio.to_thread(identity.review_pair, number)
            note.patient_ref = patient_ref(pair.record.ref.site_id, pair.record.ref.record_id)
            person = await asyncio.to_thread(identity.accept, number, actor=_actor(request))
            note.records = 1
            return {"item_id": number, "status": "accepted", "person_id": person,
                    "record": _ref(pair.record.ref)}

    @router.post("/api/identity/review/{item_id}/reject")
    async def reject(item_id: str, request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Identity/ReviewReject") as note:
            query(request, ())
            number = _item_id(item_id)
            pair = await asyncio.to_thread(identity.review_pair, number)
            note.patient_ref = patient_ref(pair.record.ref.site_id, pair.record.ref.record_id)
            await asyncio.to_thread(identity.reject, number, actor=_actor(request))
            note.records = 1
            return {"item_id": number, "status": "rejected", "record": _ref(pair.record.ref),
                    "candidate": _ref(pair.candidate.ref)}

    @router.post("/api/identity/records/{site_id}/{record_id}/split")
    async def split(site_id: str, record_id: str, request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Identity/SplitRecord") as note:
            query(request, ())
            ref = RecordRef(site_id, record_id)
            note.patient_ref = patient_ref(site_id, record_id)
            previous = await asyncio.to_thread(identity.person_of, ref)
            person = await asyncio.to_thread(identity.split, ref, actor=_actor(request))
            note.records = 1
            return {"record": _ref(ref), "person_id": person, "previous_person_id": previous}

    return router


async def _person(identity: IdentityStore, person_id: str) -> dict[str, Any]:
    """A person involved: its records (ids and states only; the two compared records
    carry the demographics)."""
    try:
        view = await asyncio.to_thread(identity.person, person_id)
    except NotFound:
        return {"person_id": person_id, "merged_into": None, "records": [], "missing": True}
    return {"person_id": view.person_id, "merged_into": view.merged_into,
            "records": view.records}
