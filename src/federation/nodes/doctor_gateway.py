"""The doctor's network probes: can this site reach its gateway, and does the gateway agree?

Each layer is tried on its own, so that the answer names the layer that failed:
TCP (a firewall, a wrong address), TLS (RFC 8446: the gateway's certificate is not from
our CA, or the gateway refuses ours), gRPC health (``grpc.health.v1``: the gateway process
is up but not serving), and ``Diagnostics.CheckCaller`` (what the gateway reads from our
certificate, whether its registry knows the site, and its clock). Nothing here
registers or heartbeats: a doctor run never makes the gateway think a node is up.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from federation._proto.v1 import diagnostics_pb2, diagnostics_pb2_grpc
from federation.rpc.channels import secure_channel
from federation.rpc.wire import from_timestamp
from federation.security.ca import GATEWAY_SERVER_NAME
from federation.security.tls import TlsMaterial
from federation.settings import NodeSettings

__all__ = ["GatewayProbe", "CallerView", "probe_tcp", "probe_tls", "probe_grpc"]

#: HTTP/2 connection preface and an empty SETTINGS frame (RFC 9113 §3.4): a gRPC server
#: answers with its own SETTINGS, or — when it refused our certificate — with a TLS alert
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class CallerView:
    """What the gateway said about us, and how far its clock is from ours."""

    role: str
    name: str
    tier: str
    registry_member: bool
    registry_tier: str
    node_state: str
    skew: dt.timedelta          # gateway clock minus ours (positive: ours is behind)
    round_trip: dt.timedelta


@dataclass(frozen=True, slots=True)
class GatewayProbe:
    ok: bool
    detail: str
    fix: str = ""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def probe_tcp(address: str, timeout: float) -> GatewayProbe:
    host, port = _split(address)
    started = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return GatewayProbe(False, f"no answer from {address} within {timeout:g} s",
                            "check the 'gateway' address in site.toml and that this site's "
                            "firewall lets outbound TCP to that port through")
    except OSError as exc:
        return GatewayProbe(False, f"cannot connect to {address}: {exc.strerror or exc}",
                            "check the 'gateway' address in site.toml, that the gateway is "
                            "running, and that no firewall blocks the port")
    ms = (time.perf_counter() - started) * 1000
    return GatewayProbe(True, f"TCP connection to {address} in {ms:.0f} ms")


def probe_tls(address: str, settings: NodeSettings, timeout: float) -> GatewayProbe:
    """A TLS 1.2+ handshake as the node makes it: our certificate, the consortium CA,
    the gateway's name ``gateway.federation.internal``, ALPN ``h2``."""
    host, port = _split(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(settings.tls.ca))
        ctx.load_cert_chain(str(settings.tls.cert), str(settings.tls.key))
    except (OSError, ssl.SSLError) as exc:
        return GatewayProbe(False, f"cannot use this site's TLS files: {exc}",
                            "fix the certificate checks above first")
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=GATEWAY_SERVER_NAME) as tls:
            version = tls.version()
            tls.sendall(_H2_PREFACE)
            try:
                answer = tls.recv(9)
            except TimeoutError:
                answer = b"?"  # silent but open: the handshake itself was accepted
            if not answer:
                return _refused("the gateway closed the connection after the handshake")
    except ssl.SSLCertVerificationError as exc:
        return GatewayProbe(
            False, f"the gateway's certificate is not trusted: {exc.verify_message}",
            f"tls.ca ({settings.tls.ca}) must be the consortium CA certificate that signed the "
            f"gateway's; ask the consortium administrator for ca.crt")
    except ssl.SSLError as exc:
        return _refused(f"TLS alert from the gateway: {exc.reason or exc}")
    except (ConnectionResetError, BrokenPipeError):
        return _refused("the gateway reset the connection during the handshake")
    except OSError as exc:
        return GatewayProbe(False, f"TLS to {address} failed: {exc.strerror or exc}",
                            "check that 'gateway' in site.toml is the gateway's gRPC port")
    return GatewayProbe(True, f"{version} handshake with {GATEWAY_SERVER_NAME} at {address}; "
                              f"the gateway accepted this site's certificate")


def _refused(why: str) -> GatewayProbe:
    return GatewayProbe(False, f"{why} — it refused this site's certificate",
                        "the certificate must be a current one from the consortium CA and not "
                        "revoked; see the certificate checks, or ask for a new one with "
                        "`federation ca issue --site <id>`")


async def probe_grpc(
    address: str, material: TlsMaterial, timeout: float, *,
    clock: Callable[[], dt.datetime],
) -> tuple[GatewayProbe, CallerView | None]:
    """gRPC health of the Gateway service, then ``Diagnostics.CheckCaller``."""
    channel = secure_channel(address, material, 4 << 20, server_name=GATEWAY_SERVER_NAME)
    async with channel:
        try:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="federation.v1.Gateway"), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return GatewayProbe(False, f"gRPC health check failed: {exc.code().name} "
                                       f"({exc.details()})",
                                "the gateway is not serving gRPC; ask its operators"), None
        if health.status != health_pb2.HealthCheckResponse.SERVING:
            state = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
            return GatewayProbe(False, f"the gateway reports {state}",
                                "the gateway is shutting down or starting; try again shortly, "
                                "or ask its operators"), None
        sent = clock()
        try:
            reply = await diagnostics_pb2_grpc.DiagnosticsStub(channel).CheckCaller(
                diagnostics_pb2.CheckCallerRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return GatewayProbe(False, f"the gateway refused this site's calls: "
                                       f"{exc.code().name} ({exc.details()})",
                                "see the message: usually a revoked or wrong-role "
                                "certificate"), None
        received = clock()
    server_time = from_timestamp(reply.server_time) or received
    view = CallerView(
        role=reply.role, name=reply.name, tier=reply.tier,
        registry_member=reply.registry_member, registry_tier=reply.registry_tier,
        node_state=reply.node_state, skew=server_time - (sent + (received - sent) / 2),
        round_trip=received - sent)
    return GatewayProbe(True, f"gRPC health SERVING; gateway {reply.software_version}"), view
