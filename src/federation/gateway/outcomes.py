"""One table from the federation's errors to HTTP statuses and FHIR OperationOutcomes.

Every HTTP surface (the gateway's API, the FHIR operations) answers errors through
:func:`operation_outcome`; see :mod:`federation.errors` for the tree.
"""

from __future__ import annotations

from typing import Any

from federation import errors

__all__ = ["operation_outcome", "HTTP_STATUS"]

#: one table from error to HTTP status and FHIR issue type (most specific first)
HTTP_STATUS: tuple[tuple[type[errors.FederationError], int, str], ...] = (
    (errors.PayloadTooLarge, 413, "too-costly"),
    (errors.UnsupportedMediaType, 415, "not-supported"),
    (errors.UnknownSite, 404, "not-found"),
    (errors.InvalidInput, 400, "invalid"),
    (errors.NotFound, 404, "not-found"),
    (errors.Conflict, 409, "conflict"),
    (errors.AuthenticationError, 401, "login"),
    (errors.PermissionDenied, 403, "forbidden"),
    (errors.RateLimited, 429, "throttled"),
    (errors.DeadlineExceeded, 504, "timeout"),
    (errors.Unavailable, 503, "transient"),
)


def operation_outcome(exc: errors.FederationError) -> tuple[int, dict[str, Any]]:
    status, code = 500, "exception"
    for kind, http_status, issue_code in HTTP_STATUS:
        if isinstance(exc, kind):
            status, code = http_status, issue_code
            break
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": exc.message}
    field = getattr(exc, "field", None)
    if field:   # FHIR R4 OperationOutcome.issue.expression: where in the request
        issue["expression"] = [field]
    return status, {"resourceType": "OperationOutcome", "issue": [issue]}
