"""The gateway's HTTP listening socket: connections it accepts send small writes at once.

A keep-alive response goes out in two writes (head, then body). With Nagle's algorithm
on, the body waits for the client to acknowledge the head, and clients delay that ACK
(~40 ms on Linux): every response after a connection's first took 40 ms longer. asyncio
turns Nagle off only on accepted sockets whose ``proto`` is TCP, so the listening
socket must be made with it."""

from __future__ import annotations

import asyncio
import socket

from federation.gateway.app import _bind


async def test_accepted_connections_have_nagle_off() -> None:
    sock = _bind("127.0.0.1:0")
    nodelay: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = writer.get_extra_info("socket")
        nodelay.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname())
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert nodelay and nodelay[0] != 0, "accepted HTTP connections keep Nagle's algorithm on"
