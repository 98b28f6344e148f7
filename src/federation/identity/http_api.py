"""The EMPI's JSON API for people and tools: a person with records, golden data (masked)
and the history of every link with its reasons."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from fastapi import APIRouter

from federation.identity.index import RecordRef
from federation.identity.store import IdentityStore

__all__ = ["create_identity_api", "mask", "masked_person"]


def mask(value: str) -> str:
    """140***********123X: enough to recognise, not enough to use."""
    return value[:3] + "*" * max(len(value) - 7, 0) + value[-4:] if len(value) > 7 else "***"


def masked_person(view: Any) -> dict[str, Any]:
    """A PersonView as JSON, with the golden resident ID and phone masked."""
    body = dataclasses.asdict(view)
    for key in ("national_id", "phone"):
        entry = body["golden"].get(key) or {}
        if entry.get("value"):
            entry["value"] = mask(str(entry["value"]))
    return body


def create_identity_api(identity: IdentityStore) -> APIRouter:
    router = APIRouter(prefix="/api/identity")

    @router.get("/persons/{person_id}")
    async def person(person_id: str) -> dict[str, Any]:
        return masked_person(await asyncio.to_thread(identity.person, person_id))

    @router.get("/records/{site_id}/{record_id}/person")
    async def person_of_record(site_id: str, record_id: str) -> dict[str, Any]:
        from federation.errors import NotFound

        pid = await asyncio.to_thread(identity.person_of, RecordRef(site_id, record_id))
        if pid is None:
            raise NotFound(f"record {site_id}/{record_id} is not linked to a person")
        return masked_person(await asyncio.to_thread(identity.person, pid))

    @router.get("/counts")
    async def counts() -> dict[str, int]:
        return await asyncio.to_thread(identity.counts)

    return router
