"""The federation's error tree: one root, translated once at each boundary.

    FederationError                  anything the federation raises on purpose
    ├── ConfigError                  a setting is missing or malformed (names the key)
    ├── InvalidInput                 a caller sent something malformed (bad FHIR, bad id, bad query)
    │   ├── PayloadTooLarge          a message or document over the configured limit
    │   └── UnsupportedMediaType     content of a type (or form) this operation cannot handle
    ├── NotFound                     a site, node, patient or work item that does not exist
    │   └── UnknownSite              a site that is not a member of the consortium registry
    ├── Conflict                     the request contradicts stored state (tier mismatch, dup)
    │   ├── InvalidTransition        a workflow move the state machine does not allow now
    │   └── ConcurrentUpdate         someone else changed it first (stale version): reload
    ├── AuthenticationError          no or unusable credentials (no client cert, bad chain)
    │   └── CertificateRevoked       the presented certificate is on the consortium CRL
    ├── PermissionDenied             authenticated, but this identity may not do this
    ├── RateLimited                  this caller sent too many requests; retry after a while
    ├── SourceError                  a site's own system (database, export) failed or is malformed
    ├── MappingError                 a source record could not be mapped to valid FHIR
    ├── IntegrityError               stored or served data fails a check: a tampered audit
    │                                log, a bad signature or proof, a forked history
    └── Unavailable                  a peer (node or gateway) could not be reached in time
        └── DeadlineExceeded         the peer did not answer within the deadline

Transports translate these in one table each: ``federation.gateway.status`` maps them
to gRPC status codes, ``federation.gateway.outcomes`` to FHIR OperationOutcome + HTTP
status. Messages are written for a person: they say what is wrong and what to do, and
they never contain patient data (names, ID numbers, phones) — only ids and hashes.
"""

from __future__ import annotations

__all__ = [
    "FederationError",
    "ConfigError",
    "InvalidInput",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "NotFound",
    "UnknownSite",
    "Conflict",
    "InvalidTransition",
    "ConcurrentUpdate",
    "AuthenticationError",
    "CertificateRevoked",
    "PermissionDenied",
    "RateLimited",
    "SourceError",
    "MappingError",
    "IntegrityError",
    "Unavailable",
    "DeadlineExceeded",
]


class FederationError(Exception):
    """Root of every error the federation raises deliberately."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: a short machine-readable code (e.g. ``"unknown-site"``), stable across versions
        self.code = code or self.default_code

    default_code = "error"

    def __str__(self) -> str:
        return self.message


class ConfigError(FederationError):
    default_code = "config"


class InvalidInput(FederationError):
    """``field`` names the request field at fault (a JSON key, dotted for nested ones), so
    a form can show the message next to it; HTTP carries it as OperationOutcome
    ``issue.expression``."""

    default_code = "invalid"

    def __init__(self, message: str, *, code: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class PayloadTooLarge(InvalidInput):
    default_code = "too-large"


class UnsupportedMediaType(InvalidInput):
    default_code = "unsupported-type"


class NotFound(FederationError):
    default_code = "not-found"


class UnknownSite(NotFound):
    default_code = "unknown-site"


class Conflict(FederationError):
    default_code = "conflict"


class InvalidTransition(Conflict):
    """E.g. accepting a cancelled referral: names the state, the move and what is allowed."""

    default_code = "invalid-transition"


class ConcurrentUpdate(Conflict):
    """Optimistic concurrency: the caller's version is not the stored one any more."""

    default_code = "concurrent-update"


class AuthenticationError(FederationError):
    default_code = "unauthenticated"


class CertificateRevoked(AuthenticationError):
    default_code = "certificate-revoked"


class PermissionDenied(FederationError):
    default_code = "forbidden"


class RateLimited(FederationError):
    default_code = "rate-limited"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        #: seconds until the caller may try again
        self.retry_after = retry_after


class SourceError(FederationError):
    default_code = "source"


class MappingError(FederationError):
    default_code = "mapping"


class IntegrityError(FederationError):
    default_code = "integrity"


class Unavailable(FederationError):
    default_code = "unavailable"


class DeadlineExceeded(Unavailable):
    default_code = "timeout"
