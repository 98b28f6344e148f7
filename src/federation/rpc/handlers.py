"""Registering a generated servicer with some of its streamed replies sent as bytes.

A reply message that is already serialized — a study chunk relayed as it arrived, or
written once by hand (:mod:`federation.consult.wire`) — would otherwise have to be parsed
into a message object only for gRPC to serialize it again: a copy of a MiB each way per
chunk. The servicers of the methods named here may yield ``bytes`` (sent unchanged) or
message objects (serialized as usual).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import grpc

__all__ = ["add_with_raw_replies"]


class _Capture:
    """Stands in for the server while a generated ``add_…_to_server`` registers."""

    service = ""
    handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, service: str,
                                       handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.service, self.handlers = service, dict(handlers)


def _bytes_or(serializer: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serialize(message: Any) -> bytes:
        return message if type(message) is bytes else serializer(message)
    return serialize


def add_with_raw_replies(add: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server,
                         methods: Collection[str]) -> None:
    """``add(servicer, server)`` (a generated ``add_…Servicer_to_server``), except that
    the server-streaming ``methods`` also accept ``bytes`` replies."""
    capture = _Capture()
    add(servicer, capture)
    handlers = capture.handlers
    for name in methods:
        h = handlers[name]
        if h.unary_stream is None:
            raise ValueError(f"{capture.service}/{name} is not a server-streaming method")
        handlers[name] = grpc.unary_stream_rpc_method_handler(
            h.unary_stream, request_deserializer=h.request_deserializer,
            response_serializer=_bytes_or(h.response_serializer))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(capture.service, handlers),))
    server.add_registered_method_handlers(capture.service, handlers)
