"""The terminology router on a FastAPI app: $translate (GET, POST) and $normalize."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.parameters import Parameters

from federation.terminology.http import create_terminology_router

SEX = "urn:federation:terminology:CodeSystem/gb-t-2261.1"
GENDER = "http://hl7.org/fhir/administrative-gender"


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(create_terminology_router())
    return TestClient(app)


def _params(body: dict) -> dict:
    return {p["name"]: p for p in body["parameter"]}


def test_get_translate_returns_fhir_parameters(client: TestClient) -> None:
    response = client.get("/fhir/ConceptMap/$translate",
                          params={"system": SEX, "code": "2", "targetsystem": GENDER})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    Parameters.model_validate(body)
    params = _params(body)
    assert params["result"]["valueBoolean"] is True
    concept = next(p for p in params["match"]["part"] if p["name"] == "concept")
    assert concept["valueCoding"] == {"system": GENDER, "code": "female", "display": "Female"}


def test_get_translate_no_match_is_200_with_result_false(client: TestClient) -> None:
    response = client.get("/fhir/ConceptMap/$translate", params={"system": SEX, "code": "5"})
    assert response.status_code == 200
    params = _params(response.json())
    assert params["result"]["valueBoolean"] is False and "message" in params


@pytest.mark.parametrize("query", [{"system": SEX}, {"code": "1"}, {}])
def test_get_translate_without_system_or_code_is_400_operation_outcome(
        client: TestClient, query: dict) -> None:
    response = client.get("/fhir/ConceptMap/$translate", params=query)
    assert response.status_code == 400
    outcome = OperationOutcome.model_validate(response.json())
    assert outcome.issue[0].code == "invalid"


def test_post_translate_with_system_and_code(client: TestClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "system", "valueUri": SEX}, {"name": "code", "valueCode": "1"},
        {"name": "targetsystem", "valueUri": GENDER}]}
    response = client.post("/fhir/ConceptMap/$translate", json=body)
    assert response.status_code == 200
    assert _params(response.json())["result"]["valueBoolean"] is True


def test_post_translate_with_a_coding_and_reverse(client: TestClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": "http://loinc.org", "code": "4548-4"}},
        {"name": "reverse", "valueBoolean": True}]}
    response = client.post("/fhir/ConceptMap/$translate", json=body)
    codes = {part["valueCoding"]["code"] for p in response.json()["parameter"]
             if p["name"] == "match" for part in p["part"] if part["name"] == "concept"}
    assert "HBA1C" in codes


@pytest.mark.parametrize("body", [
    {"resourceType": "Parameters", "parameter": [{"name": "system", "valueUri": SEX}]},
    {"resourceType": "Patient"},
    [1, 2],
])
def test_post_translate_bad_bodies_are_400(client: TestClient, body) -> None:
    response = client.post("/fhir/ConceptMap/$translate", json=body)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_post_translate_non_json_is_400(client: TestClient) -> None:
    response = client.post("/fhir/ConceptMap/$translate", content=b"not json",
                           headers={"content-type": "application/fhir+json"})
    assert response.status_code == 400


@pytest.mark.parametrize("body", [
    {"text": "左侧中央型肺鳞癌并纵膈淋巴结转移", "subject": "Patient/7"},
    {"resourceType": "Parameters", "parameter": [
        {"name": "text", "valueString": "左侧中央型肺鳞癌并纵膈淋巴结转移"}]},
])
def test_normalize_returns_the_condition(client: TestClient, body: dict) -> None:
    response = client.post("/fhir/Condition/$normalize", json=body)
    assert response.status_code == 200
    condition = response.json()
    Condition.model_validate(condition)
    assert condition["code"]["coding"][0]["code"] == "C34.9"
    assert condition["code"]["text"] == "左侧中央型肺鳞癌并纵膈淋巴结转移"


@pytest.mark.parametrize("body", [{}, {"text": ""}, {"text": 5}, {"text": "癌" * 3000}])
def test_normalize_rejects_missing_or_oversized_text(client: TestClient, body: dict) -> None:
    assert client.post("/fhir/Condition/$normalize", json=body).status_code == 400
