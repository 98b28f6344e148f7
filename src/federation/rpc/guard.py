"""The call guard: every RPC a federation server handles passes through here once.

For each call it (1) reads the caller's identity from its client certificate — never
from a request field, (2) refuses revoked certificates, (3) checks the caller's role
against the server's policy table (default deny: a method missing from the table is
refused), (3a) takes a token from the caller certificate's rate-limit bucket, where the
server has one (RESOURCE_EXHAUSTED with the wait in the message), (4) translates :class:`~federation.errors.FederationError` to a gRPC status
through :mod:`federation.rpc.status`, and (5) records duration and status as metrics
and a log line that carries method, peer and code only — no patient data.

gRPC's Python interceptors see only the method name and metadata, not the TLS
session, so the guard wraps the method handler itself to reach ``auth_context()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from federation.errors import AuthenticationError, FederationError, PermissionDenied
from federation.logs import describe_exception
from federation.rpc.metrics import RPC_SECONDS
from federation.rpc.status import ERROR_CODE_KEY, status_for
from federation.security.identity import PeerIdentity, RevocationList
from federation.security.limits import RateLimiter
from federation.security.tls import peer_identity

__all__ = ["CallGuard", "current_peer", "EXEMPT_PREFIXES"]

log = logging.getLogger("federation.rpc")

#: the caller of the RPC being handled (set by the guard before the servicer runs)
current_peer: contextvars.ContextVar[PeerIdentity] = contextvars.ContextVar("current_peer")

#: standard services open to any holder of a consortium certificate
EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class CallGuard(grpc.aio.ServerInterceptor):
    """Authenticate, authorise, translate errors and measure every call.

    ``policy`` maps a full method name (``/federation.v1.Gateway/Heartbeat``) to the
    certificate roles allowed to call it; ``on_refused`` hears of every refused call
    (the gateway writes it to the exchange log and the audit trail); ``limiter`` holds a
    bucket per caller certificate (a node, an operator), so one runaway site cannot starve
    the others — a refusal by rate is answered, not audited as a refused exchange.
    """

    def __init__(
        self,
        component: str,
        policy: Mapping[str, frozenset[str]],
        revocations: RevocationList | None = None,
        on_refused: Callable[[str, grpc.aio.ServicerContext, FederationError],
                             Awaitable[None]] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._component = component
        self._limiter = limiter
        self._policy = dict(policy)
        self._revocations = revocations
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(EXEMPT_PREFIXES):
            return handler
        return self._wrap(handler, details.method)

    # ------------------------------------------------------------------ authorisation

    def authorize(self, context: grpc.aio.ServicerContext, method: str) -> PeerIdentity:
        identity = peer_identity(context)
        if self._revocations is not None:
            self._revocations.check(identity)
        allowed = self._policy.get(method)
        if allowed is None:
            raise PermissionDenied(f"{method} is not open to any caller on this {self._component}")
        if identity.role not in allowed:
            raise PermissionDenied(
                f"a {identity.role} certificate ('{identity.name}') may not call {method}; "
                f"it is open to: {', '.join(sorted(allowed))}"
            )
        current_peer.set(identity)
        if self._limiter is not None:
            self._limiter.take(identity.name)
        return identity

    # ------------------------------------------------------------------ wrapping

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        short = method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            fn = self._guard_unary(handler.unary_unary, method, short)
            factory = grpc.unary_unary_rpc_method_handler
        elif handler.unary_stream is not None:
            fn = self._guard_stream(handler.unary_stream, method, short)
            factory = grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary is not None:
            fn = self._guard_unary(handler.stream_unary, method, short)
            factory = grpc.stream_unary_rpc_method_handler
        else:
            fn = self._guard_stream(handler.stream_stream, method, short)
            factory = grpc.stream_stream_rpc_method_handler
        return factory(
            fn,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @contextlib.asynccontextmanager
    async def _call(self, context: grpc.aio.ServicerContext, method: str,
                    short: str) -> AsyncIterator[None]:
        """Authorise, then run the body; translate its errors and measure it."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            try:
                self.authorize(context, method)
            except (AuthenticationError, PermissionDenied) as exc:
                if self._on_refused is not None:  # refusals are exchanges too (audit)
                    await self._on_refused(method, context, exc)
                raise
            yield
        except FederationError as exc:
            code = status_for(exc)
            await _abort(context, code, exc)
        except grpc.aio.AbortError:
            code = _code_of(context)
            raise
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            log.error("%s %s failed: %s", self._component, short, describe_exception(exc))
            await context.abort(code, f"internal error in {short}; see the server log")
        finally:
            self._record(short, code, started, context)

    def _guard_unary(self, inner: Callable[..., Any], method: str, short: str) -> Callable[..., Any]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._call(context, method, short):
                result = inner(request, context)
                return await result if inspect.isawaitable(result) else result

        return guarded

    def _guard_stream(self, inner: Callable[..., Any], method: str, short: str) -> Callable[..., Any]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._call(context, method, short):
                async for item in inner(request, context):
                    yield item

        return guarded

    def _record(
        self, short: str, code: grpc.StatusCode, started: float, context: grpc.aio.ServicerContext
    ) -> None:
        elapsed = time.perf_counter() - started
        RPC_SECONDS.labels(self._component, short, code.name).observe(elapsed)
        if code is not grpc.StatusCode.OK:
            peer = current_peer.get(None)
            log.info(
                "%s %s -> %s in %.1f ms (peer %s)",
                self._component, short, code.name, elapsed * 1000,
                peer.name if peer else context.peer(),
            )


def _code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:  # older grpcio: the code is not readable back
        return grpc.StatusCode.UNKNOWN
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode,
                 exc: FederationError) -> None:
    """Abort with the status and, in trailing metadata, the federation error code, so
    a client can rebuild the exact error (``unknown-site``, not just ``NOT_FOUND``)."""
    context.set_trailing_metadata(((ERROR_CODE_KEY, exc.code),))
    await context.abort(code, exc.message)
