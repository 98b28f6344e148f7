"""Channel and server options shared by every federation endpoint.

A client may be given several gateway replicas as one comma-separated target
(``10.0.0.5:50051,10.0.0.6:50051``): the channel then spreads its calls round-robin over
the replicas that answer and leaves out one that is down, with no proxy in between.
"""

from __future__ import annotations

import ipaddress

import grpc

from federation.errors import ConfigError
from federation.rpc.rotating import RotatingChannel
from federation.security.rotation import TlsFiles
from federation.security.tls import TlsMaterial, channel_credentials

__all__ = ["server_options", "client_options", "secure_channel", "rotating_channel",
           "channel_target"]


def _limits(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Size limits, and acceptance of the clients' keepalive pings."""
    return _limits(max_message_bytes) + [
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def client_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Size limits and keepalive: a dead peer is noticed in seconds, not at TCP timeout."""
    return _limits(max_message_bytes) + [
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),
    ]


def secure_channel(
    target: str, tls: TlsMaterial | TlsFiles, max_message_bytes: int, *,
    server_name: str | None = None,
) -> grpc.aio.Channel:
    """An mTLS channel to ``target``; ``server_name`` overrides the name checked in its cert.

    Given :class:`TlsFiles` (long-running gateway and nodes), the channel follows the
    certificate files: after a rotation on disk, new calls present the new certificate."""
    if isinstance(tls, TlsFiles):
        return rotating_channel(target, tls, max_message_bytes, server_name=server_name)
    target, options = _client(target, max_message_bytes, server_name)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)


def rotating_channel(target: str, files: TlsFiles, max_message_bytes: int, *,
                     server_name: str | None = None) -> RotatingChannel:
    """Like :func:`secure_channel`, following ``files`` (see :mod:`federation.rpc.rotating`)."""
    target, options = _client(target, max_message_bytes, server_name)
    return RotatingChannel(target, files, options)


def _client(target: str, max_message_bytes: int, server_name: str | None
            ) -> tuple[str, list[tuple[str, int | str]]]:
    options: list[tuple[str, int | str]] = list(client_options(max_message_bytes))
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    target, balanced = channel_target(target)
    if balanced:
        options.append(("grpc.lb_policy_name", "round_robin"))
    return target, options


def channel_target(addresses: str) -> tuple[str, bool]:
    """The gRPC target for ``host:port`` or a comma-separated list of them, and whether
    it lists several (to be balanced round-robin). Several addresses must be IP addresses
    of one family (gRPC's static ``ipv4:``/``ipv6:`` targets); a DNS name stands alone —
    one that resolves to every replica does the same job."""
    parts = [a.strip() for a in addresses.split(",") if a.strip()]
    if len(parts) <= 1:
        return (parts[0] if parts else addresses), False
    families = set()
    for part in parts:
        host = part.rsplit(":", 1)[0].strip("[]")
        try:
            families.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ConfigError(
                f"gateway address {part!r}: several gateways must be given as IP addresses "
                "(10.0.0.5:50051,10.0.0.6:50051); for DNS names give one name that resolves "
                "to every replica") from None
    if len(families) > 1:
        raise ConfigError(f"gateway addresses {addresses!r} mix IPv4 and IPv6; use one family")
    return f"ipv{families.pop()}:{','.join(parts)}", True
