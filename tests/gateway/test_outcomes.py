"""The one table from errors to HTTP OperationOutcomes: a field at fault travels as
``issue.expression`` (FHIR R4 OperationOutcome), for a form to show the message beside it."""

from __future__ import annotations

from fhir.resources.R4B.operationoutcome import OperationOutcome

from federation import errors
from federation.gateway.outcomes import operation_outcome


def test_invalid_input_names_its_field():
    status, body = operation_outcome(errors.InvalidInput("urgency must be one of routine",
                                                         field="urgency"))
    OperationOutcome.model_validate(body)
    assert status == 400
    assert body["issue"][0]["expression"] == ["urgency"]
    assert body["issue"][0]["diagnostics"] == "urgency must be one of routine"


def test_other_errors_carry_no_expression():
    for exc, status in [(errors.InvalidInput("bad"), 400), (errors.Conflict("later"), 409),
                        (errors.PayloadTooLarge("big"), 413)]:
        got, body = operation_outcome(exc)
        OperationOutcome.model_validate(body)
        assert got == status and "expression" not in body["issue"][0]
