"""What the gateway checks of every resource a node sends (``validate_resource``), and
that bytes already checked against the FHIR models are not checked with them again —
while the envelope's own claims are checked every time."""

from __future__ import annotations

import json

import pytest

from federation import envelope
from federation.envelope import Envelope, validate_resource
from federation.errors import InvalidInput


def _patient(rid: str, **extra: object) -> Envelope:
    body = {"resourceType": "Patient", "id": rid, "gender": "female", **extra}
    return Envelope("Patient", rid, "county-a", json.dumps(body).encode())


@pytest.fixture
def model_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of the FHIR models, by resource id."""
    calls: list[str] = []
    real = envelope.get_fhir_model_class

    class Counting:
        def __init__(self, model: type) -> None:
            self._model = model

        def model_validate(self, data: dict) -> object:
            calls.append(data["id"])
            return self._model.model_validate(data)

    monkeypatch.setattr(envelope, "get_fhir_model_class", lambda t: Counting(real(t)))
    monkeypatch.setattr(envelope, "_VALIDATED", {})
    return calls


def test_the_same_bytes_meet_the_models_once(model_checks: list[str]) -> None:
    first = _patient("p1")
    assert validate_resource(first)["id"] == "p1"
    assert validate_resource(Envelope("Patient", "p1", "city-1", first.json))["id"] == "p1"
    assert model_checks == ["p1"]
    validate_resource(_patient("p1", birthDate="1960-01-02"))     # other bytes: checked
    assert model_checks == ["p1", "p1"]


def test_claims_are_checked_every_time_and_failures_never_kept(model_checks: list[str]) -> None:
    good = _patient("p2")
    validate_resource(good)
    with pytest.raises(InvalidInput, match="different id"):
        validate_resource(Envelope("Patient", "other", "county-a", good.json))
    with pytest.raises(InvalidInput, match="says resourceType"):
        validate_resource(Envelope("Observation", "p2", "county-a", good.json))
    bad = _patient("p3", gender=7)
    for _ in range(2):
        with pytest.raises(InvalidInput, match="not valid FHIR R4"):
            validate_resource(bad)
    assert model_checks == ["p2", "p3", "p3"]


def test_the_memory_is_bounded(model_checks: list[str], monkeypatch: pytest.MonkeyPatch
                               ) -> None:
    monkeypatch.setattr(envelope, "VALIDATED_KEPT", 3)
    for n in range(5):
        validate_resource(_patient(f"q{n}"))
    assert len(envelope._VALIDATED) == 3
    validate_resource(_patient("q0"))                          # forgotten: checked again
    assert model_checks == ["q0", "q1", "q2", "q3", "q4", "q0"]
