"""Process plumbing shared by the long-running commands (gateway, node agent)."""

from __future__ import annotations

import asyncio
import signal

__all__ = ["wait_for_shutdown_signal"]


async def wait_for_shutdown_signal() -> None:
    """Return on the first SIGINT or SIGTERM (Ctrl-C, systemd stop, Kubernetes)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
