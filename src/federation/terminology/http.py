"""The terminology service on the gateway's HTTP API (FHIR REST operations).

* ``GET|POST /fhir/ConceptMap/$translate`` — R4 ConceptMap ``$translate``
  (https://hl7.org/fhir/R4/conceptmap-operation-translate.html); GET takes ``system``,
  ``code``, ``targetsystem``, ``url``, ``reverse`` as query parameters, POST a FHIR
  ``Parameters`` resource (``system``/``code`` or ``coding``); both answer ``Parameters``.
* ``POST /fhir/Condition/$normalize`` — free-text diagnosis → Condition; the body is
  ``{"text": "…"}`` or ``Parameters`` with a ``text`` (valueString) parameter.

Errors leave as OperationOutcome through the gateway's one table
(:func:`federation.gateway.http_app.operation_outcome`): a missing ``system``/``code`` is 400.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from federation.errors import FederationError, InvalidInput
from federation.gateway.outcomes import operation_outcome
from federation.terminology.condition import to_condition
from federation.terminology.normalise import normalise_diagnosis
from federation.terminology.translate import Terminology, to_parameters

__all__ = ["create_terminology_router", "FHIR_JSON"]

FHIR_JSON = "application/fhir+json"
_MAX_TEXT = 2000        # a diagnosis, not a document


def _fhir(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _outcome(exc: FederationError) -> JSONResponse:
    status, body = operation_outcome(exc)
    return _fhir(body, status)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise InvalidInput("the request body is not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    """name → value[x] of a FHIR Parameters resource (first occurrence wins)."""
    if body.get("resourceType") != "Parameters":
        raise InvalidInput("expected a FHIR Parameters resource")
    out: dict[str, Any] = {}
    for param in body.get("parameter") or []:
        if not isinstance(param, dict) or "name" not in param:
            raise InvalidInput("every Parameters.parameter needs a name")
        value = next((v for k, v in param.items() if k.startswith("value")), None)
        out.setdefault(param["name"], value)
    return out


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def create_terminology_router(terminology: Terminology | None = None) -> APIRouter:
    """An ``APIRouter`` (prefix ``/fhir``) over ``terminology`` (default: packaged maps)."""
    term = terminology or Terminology.default()
    router = APIRouter(prefix="/fhir", tags=["terminology"])

    def translate(system: Any, code: Any, target: Any, url: Any, reverse: Any) -> JSONResponse:
        if not isinstance(system, str) or not isinstance(code, str):
            raise InvalidInput("$translate needs both 'system' and 'code'")
        result = term.translate(system, code, target or None, url=url or None,
                                reverse=_flag(reverse))
        return _fhir(to_parameters(result))

    @router.get("/ConceptMap/$translate")
    async def translate_get(system: str | None = None, code: str | None = None,
                            targetsystem: str | None = None, url: str | None = None,
                            reverse: bool = False) -> JSONResponse:
        try:
            return translate(system, code, targetsystem, url, reverse)
        except FederationError as exc:
            return _outcome(exc)

    @router.post("/ConceptMap/$translate")
    async def translate_post(request: Request) -> JSONResponse:
        try:
            params = _parameters(await _json_body(request))
            system, code = params.get("system"), params.get("code")
            coding = params.get("coding")
            if isinstance(coding, dict) and code is None:
                system, code = coding.get("system"), coding.get("code")
            return translate(system, code, params.get("targetsystem"), params.get("url"),
                             params.get("reverse"))
        except FederationError as exc:
            return _outcome(exc)

    @router.post("/Condition/$normalize")
    async def normalize(request: Request) -> JSONResponse:
        try:
            body = await _json_body(request)
            text = (_parameters(body).get("text") if body.get("resourceType") == "Parameters"
                    else body.get("text"))
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput("$normalize needs a non-empty 'text'")
            if len(text) > _MAX_TEXT:
                raise InvalidInput(f"diagnosis text longer than {_MAX_TEXT} characters")
            subject = body.get("subject") if isinstance(body.get("subject"), str) else None
            return _fhir(to_condition(normalise_diagnosis(text), subject_ref=subject))
        except FederationError as exc:
            return _outcome(exc)

    return router
