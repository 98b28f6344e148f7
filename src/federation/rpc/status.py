"""One table from the federation's errors to gRPC status codes, and back.

See :mod:`federation.errors` for the tree. Anything not in the tree is an internal
error: the peer gets ``INTERNAL`` with a correlation hint, never a stack trace.
"""

from __future__ import annotations

import grpc

from federation import errors

__all__ = ["status_for", "error_from_rpc", "ERROR_CODE_KEY"]

#: trailing-metadata key carrying :attr:`FederationError.code` next to the status
ERROR_CODE_KEY = "federation-error-code"

_TO_STATUS: tuple[tuple[type[errors.FederationError], grpc.StatusCode], ...] = (
    # most specific first
    (errors.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.CertificateRevoked, grpc.StatusCode.UNAUTHENTICATED),
    (errors.UnknownSite, grpc.StatusCode.NOT_FOUND),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConcurrentUpdate, grpc.StatusCode.ABORTED),
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.SourceError, grpc.StatusCode.UNAVAILABLE),
    (errors.MappingError, grpc.StatusCode.INTERNAL),
    (errors.IntegrityError, grpc.StatusCode.DATA_LOSS),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)

_FROM_STATUS: dict[grpc.StatusCode, type[errors.FederationError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.PayloadTooLarge,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.ABORTED: errors.ConcurrentUpdate,
    grpc.StatusCode.UNAUTHENTICATED: errors.AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DATA_LOSS: errors.IntegrityError,
}


def status_for(exc: errors.FederationError) -> grpc.StatusCode:
    for kind, code in _TO_STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def error_from_rpc(exc: grpc.RpcError, peer: str) -> errors.FederationError:
    """Translate a failed call to ``peer`` into the federation's tree (client side)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or code.name
    if code == grpc.StatusCode.UNAVAILABLE and _looks_like_tls(details):
        details = (
            f"TLS handshake with {peer} failed — the peer refused our certificate or we do not "
            f"trust its certificate (issued by another CA, expired or revoked). Check that "
            f"both come from the consortium CA and are current (`federation ca list` on the "
            f"CA host). ({details})"
        )
    kind = _by_error_code(exc) or _FROM_STATUS.get(code, errors.FederationError)
    return kind(f"{peer}: {details}" if not details.startswith(peer) else details)


def _looks_like_tls(details: str) -> bool:
    lowered = details.lower()
    # a server that refuses our certificate just closes the socket (TLS 1.3); the reason
    # is only in the server's log, so "socket closed" at connect time is reported as TLS
    return any(s in lowered for s in ("ssl", "handshake", "certificate", "tls",
                                      "socket closed", "verification"))


def _all_errors(cls: type[errors.FederationError]) -> list[type[errors.FederationError]]:
    return [cls] + [k for sub in cls.__subclasses__() for k in _all_errors(sub)]


_BY_CODE = {kind.default_code: kind for kind in _all_errors(errors.FederationError)}


def _by_error_code(exc: grpc.RpcError) -> type[errors.FederationError] | None:
    try:
        metadata = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:
        return None
    for key, value in metadata:
        if key == ERROR_CODE_KEY:
            return _BY_CODE.get(value if isinstance(value, str) else value.decode())
    return None
