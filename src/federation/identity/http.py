"""The EMPI on the gateway's FHIR REST API: IHE PIXm, IHE PDQm and the EMPI's Person.

* ``GET /fhir/Patient/$ihe-pix?sourceIdentifier=<system>|<value>[&targetSystem=<uri>]*``
  (PIXm ITI-83) → ``Parameters``: a ``targetIdentifier`` (the site's patient number) and
  a ``targetId`` (``Patient/<id>``, naming its site) for each other record of the person,
  and a ``targetIdentifier`` with the EMPI person id (:data:`EMPI_PERSON_SYSTEM`).
  ``targetSystem`` (repeatable) keeps only those systems: a site's patient-id system or
  site URN, or the EMPI person system. Source identifier not found → 404; a malformed
  or unknown source system → 400; a target system the gateway does not know → 403
  (as PIXm says).
* ``GET /fhir/Patient?family=&given=&name=&birthdate=&gender=&identifier=&telecom=
  &address=&address-postalcode=|postalCode=&_count=`` (PDQm ITI-78) → ``Bundle``
  ``searchset`` of the matching *site* Patient records as the archive holds them, each
  with an extra identifier carrying its EMPI person id and ``search.score`` = match
  probability. No golden record is ever an entry. Unsupported parameters → 400.
* ``GET /fhir/Person/{id}`` → the EMPI ``Person``: golden demographics (resident ID
  masked) and a ``link`` to each site record. Unknown → 404; merged away → 410 naming
  the surviving person.

Every call is one exchange-log row (hashes only). Errors leave as OperationOutcome.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from federation.archive.read import patient_ref
from federation.archive.store import ArchiveStore
from federation.errors import FederationError, InvalidInput
from federation.fhir_systems import (
    EMPI_PERSON_SYSTEM,
    IDENTIFIER_TYPE_SYSTEM,
    local_patient_id_system,
    site_urn,
)
from federation.gateway.auth_api import requester_of
from federation.identity.http_api import mask
from federation.identity.lookup import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PdqMatch,
    birth_date,
    find_patients,
    logged,
    person_ref,
    resolve,
    site_of_system,
    split_token,
)
from federation.identity.store import IdentityStore, PersonView
from federation.store import GatewayStore

__all__ = ["create_identity_router", "PDQ_PARAMETERS", "PIX_PARAMETERS"]

FHIR_JSON = "application/fhir+json"

#: PDQm search parameters → EMPI input columns (None: handled apart)
PDQ_PARAMETERS: dict[str, str | None] = {
    "family": "family_name", "given": "given_name", "name": "name", "birthdate": "birth_date",
    "gender": "sex", "identifier": None, "telecom": "phone", "address": "address",
    "address-postalcode": "postcode", "postalCode": "postcode", "_count": None, "_format": None,
}
PIX_PARAMETERS = ("sourceIdentifier", "targetSystem", "_format")
_JSON_FORMATS = {"json", "application/json", "application/fhir+json"}
_MAX_MERGE_CHAIN = 20

def _fhir(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _issue(status: int, code: str, message: str) -> JSONResponse:
    return _fhir({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": code, "diagnostics": message}]}, status)


def _params(request: Request, supported: tuple[str, ...] | list[str], *,
            repeatable: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The query parameters, refusing any the operation does not support (FHIR servers
    may ignore them, but a silently ignored filter returns the wrong patients)."""
    out: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        if name not in supported:
            raise InvalidInput(f"parameter '{name}' is not supported here; supported: "
                               f"{', '.join(supported)}")
        out.setdefault(name, []).append(value)
    for name, values in out.items():
        if len(values) > 1 and name not in repeatable:
            raise InvalidInput(f"give parameter '{name}' once")
    fmt = out.get("_format", [None])[0]
    if fmt is not None and fmt not in _JSON_FORMATS:
        raise InvalidInput("only JSON is served: _format must be json or application/fhir+json")
    return out


def _site_display(site_id: str) -> str:
    return f"patient at site {site_id}"


def _target_id(site_id: str, record_id: str) -> dict[str, Any]:
    return {"reference": f"Patient/{record_id}", "type": "Patient",
            "identifier": {"system": site_urn(site_id), "value": record_id},
            "display": _site_display(site_id)}


def create_identity_router(identity: IdentityStore, archive: ArchiveStore | None, *,
                           store: GatewayStore | None = None) -> APIRouter:
    """``store`` receives the exchange-log rows (none are written without one); each row
    names the signed-in person (:func:`~federation.gateway.auth_api.requester_of`)."""
    router = APIRouter()

    # declared before any /fhir/Patient/{id} route so that "$ihe-pix" is never an id
    @router.get("/fhir/Patient/$ihe-pix")
    async def pix(request: Request) -> JSONResponse:
        async with logged(store, requester_of(request), "FHIR/Patient/$ihe-pix") as note:
            params = _params(request, PIX_PARAMETERS, repeatable=("targetSystem",))
            if "sourceIdentifier" not in params:
                raise InvalidInput("sourceIdentifier is required: <system>|<value>")
            system, value = split_token(params["sourceIdentifier"][0], "sourceIdentifier")
            targets = params.get("targetSystem", [])
            known = await asyncio.to_thread(identity.site_ids)
            sites, want_person, unknown = _target_sites(targets, known)
            if unknown:
                # PIXm ITI-83: a target system the manager does not know is 403
                return _issue(403, "code-invalid",
                              f"targetSystem '{unknown}' is not an identifier system of this "
                              f"consortium; use {local_patient_id_system('<site>')}, "
                              f"{site_urn('<site>')} or {EMPI_PERSON_SYSTEM}")
            result = await asyncio.to_thread(resolve, identity, system, value,
                                             sites=sites or None)
            note.patient_ref = patient_ref(result.source.site_id, result.source.record_id)
            records = result.records if (sites or not targets) else []
            note.records = len(records)
            parameter: list[dict[str, Any]] = []
            for r in records:
                if r.local_id:
                    parameter.append({"name": "targetIdentifier", "valueIdentifier": {
                        "system": local_patient_id_system(r.site_id), "value": r.local_id}})
                parameter.append({"name": "targetId",
                                  "valueReference": _target_id(r.site_id, r.record_id)})
            if want_person or not targets:
                parameter.append({"name": "targetIdentifier", "valueIdentifier": {
                    "system": EMPI_PERSON_SYSTEM, "value": result.person_id}})
            return _fhir({"resourceType": "Parameters", "parameter": parameter})

    @router.get("/fhir/Patient")
    async def pdq(request: Request) -> JSONResponse:
        async with logged(store, requester_of(request), "FHIR/Patient?search") as note:
            params = _params(request, list(PDQ_PARAMETERS))
            query: dict[str, str] = {}
            for name, values in params.items():
                column = PDQ_PARAMETERS[name]
                if column is None:
                    continue
                value = values[0].strip()
                if name == "birthdate":
                    value = birth_date(value)
                elif name == "telecom":
                    value = value.rpartition("|")[2]
                elif name == "gender" and value not in ("male", "female", "other", "unknown"):
                    raise InvalidInput("gender must be male, female, other or unknown")
                query[column] = value
            identifier = (split_token(params["identifier"][0], "identifier")
                          if "identifier" in params else None)
            limit = _count(params.get("_count", [None])[0])
            matches = await asyncio.to_thread(find_patients, identity, query,
                                              identifier=identifier, limit=limit)
            entries = await asyncio.to_thread(_entries, archive, matches)
            note.records = len(entries)
            return _fhir({"resourceType": "Bundle", "type": "searchset",
                          "total": len(entries), "entry": entries})

    @router.get("/fhir/Person/{person_id}")
    async def person(person_id: str, request: Request) -> JSONResponse:
        try:
            async with logged(store, requester_of(request), "FHIR/Person/read") as note:
                note.patient_ref = person_ref(person_id)
                view = await asyncio.to_thread(identity.person, person_id)
                if view.merged_into is not None:
                    survivor = await asyncio.to_thread(_survivor, identity, view)
                    raise _Gone(f"person '{person_id}' was merged into person '{survivor}'; "
                                f"read Person/{survivor}")
                links = [r for r in view.records if r["state"] == "linked"]
                note.records = len(links)
                return _fhir(_person_resource(view, links))
        except _Gone as exc:        # logged as an error above; FHIR answers 410 Gone
            return _issue(410, "deleted", exc.message)

    return router


class _Gone(FederationError):
    """The Person the caller named was merged into another one."""

    default_code = "gone"


def _target_sites(targets: list[str], known: set[str]) -> tuple[set[str], bool, str | None]:
    """(sites whose records are wanted, whether the person id is, the first unknown)."""
    sites: set[str] = set()
    want_person = False
    for uri in targets:
        if uri == EMPI_PERSON_SYSTEM:
            want_person = True
            continue
        try:
            site = site_of_system(uri)
        except InvalidInput:
            site = None
        if site is None or site[0] not in known:
            return sites, want_person, uri
        sites.add(site[0])
    return sites, want_person, None


def _count(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LIMIT:
        raise InvalidInput(f"_count must be a whole number from 1 to {MAX_LIMIT}")
    return n


def _entries(archive: ArchiveStore | None, matches: list[PdqMatch]) -> list[dict[str, Any]]:
    out = []
    for m in matches:
        stored = archive.get(m.site_id, "Patient", m.record_id) if archive else None
        resource: dict[str, Any] | None = None
        if stored is not None:
            try:
                resource = json.loads(stored.body)
            except ValueError:
                resource = None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            resource = {"resourceType": "Patient", "id": m.record_id,
                        "meta": {"source": site_urn(m.site_id)},
                        "identifier": [{"system": site_urn(m.site_id), "value": m.record_id}]}
            if m.local_id:
                resource["identifier"].append(
                    {"system": local_patient_id_system(m.site_id), "value": m.local_id})
        if m.person_id:
            ids = [i for i in resource.get("identifier") or []
                   if i.get("system") != EMPI_PERSON_SYSTEM]
            resource["identifier"] = [*ids, {"system": EMPI_PERSON_SYSTEM,
                                             "value": m.person_id}]
        out.append({"resource": resource,
                    "search": {"mode": "match", "score": round(m.probability, 4)}})
    return out


def _survivor(identity: IdentityStore, view: PersonView) -> str:
    current = view
    for _ in range(_MAX_MERGE_CHAIN):
        if current.merged_into is None:
            break
        current = identity.person(current.merged_into)
    return current.person_id


def _person_resource(view: PersonView, links: list[dict[str, object]]) -> dict[str, Any]:
    g = {k: (v or {}).get("value") for k, v in view.golden.items()}  # type: ignore[union-attr]
    identifiers: list[dict[str, Any]] = [{"system": EMPI_PERSON_SYSTEM,
                                          "value": view.person_id}]
    if g.get("national_id"):
        # masked, so no system: a masked value must never pass for the identifier itself
        identifiers.append({"use": "official", "type": {
            "coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "NI"}],
            "text": "resident ID (masked)"}, "value": mask(str(g["national_id"]))})
    body: dict[str, Any] = {"resourceType": "Person", "id": view.person_id,
                            "identifier": identifiers, "active": True}
    if g.get("name"):
        body["name"] = [{"use": "official", "text": g["name"]}]
    if g.get("phone"):
        body["telecom"] = [{"system": "phone", "value": mask(str(g["phone"]))}]
    if g.get("sex"):
        body["gender"] = g["sex"]
    if g.get("birth_date"):
        body["birthDate"] = g["birth_date"]
    if g.get("address"):
        body["address"] = [{"text": g["address"]}]
    body["link"] = [{"target": _target_id(str(r["site_id"]), str(r["record_id"]))}
                    for r in links]
    return body
