"""The ``Diagnostics`` gRPC service: what the gateway makes of a caller, and its clock.

``federation node doctor`` calls it to check a site's set-up end to end — the TLS
handshake, the certificate the gateway sees, the registry entry, the clock skew —
without registering or heartbeating, so running the doctor on a site whose node is down
never makes the gateway think the node is up. It only reads.
"""

from __future__ import annotations

import asyncio

import grpc

from federation import __version__
from federation._proto.v1 import diagnostics_pb2, diagnostics_pb2_grpc
from federation.gateway.registry import utcnow
from federation.rpc.guard import current_peer
from federation.rpc.wire import timestamp
from federation.store import GatewayStore

__all__ = ["DiagnosticsServicer", "DIAGNOSTICS_POLICY"]

_PREFIX = "/federation.v1.Diagnostics/"

#: which certificate roles may call which method (merged into the gateway's policy)
DIAGNOSTICS_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "CheckCaller": frozenset({"node", "operator"}),
}


class DiagnosticsServicer(diagnostics_pb2_grpc.DiagnosticsServicer):
    def __init__(self, store: GatewayStore) -> None:
        self._store = store

    async def CheckCaller(self, request: diagnostics_pb2.CheckCallerRequest,
                          context: grpc.aio.ServicerContext
                          ) -> diagnostics_pb2.CheckCallerResponse:
        peer = current_peer.get()
        site = node = None
        if peer.site_id:
            site = await asyncio.to_thread(self._store.get_site, peer.site_id)
            node = await asyncio.to_thread(self._store.get_node, peer.site_id)
        return diagnostics_pb2.CheckCallerResponse(
            server_time=timestamp(utcnow()), role=peer.role, name=peer.name,
            tier=peer.tier or "", registry_member=site is not None,
            registry_tier=site.tier if site else "", node_state=node.state if node else "",
            software_version=__version__,
        )
