"""Channel and server options shared by every federation endpoint."""

from __future__ import annotations

import grpc

from federation.security.tls import TlsMaterial, channel_credentials

__all__ = ["server_options", "client_options", "secure_channel"]


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
    target: str, tls: TlsMaterial, max_message_bytes: int, *, server_name: str | None = None
) -> grpc.aio.Channel:
    """An mTLS channel to ``target``; ``server_name`` overrides the name checked in its cert."""
    options: list[tuple[str, int | str]] = list(client_options(max_message_bytes))
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)
