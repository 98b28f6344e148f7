"""Process plumbing shared by the long-running commands (gateway, node agent)."""

from __future__ import annotations

import asyncio
import gc
import signal

__all__ = ["settle_heap", "wait_for_shutdown_signal"]

#: collections of the young generation after this many new container objects (CPython's
#: default, 700, makes a server answering with thousands of rows collect many times a
#: request)
YOUNG_GENERATION = 10_000


def settle_heap() -> None:
    """Once a server has started: move what start-up allocated (modules, models, caches)
    out of the collector's sight, and collect the young generation less often. A full
    collection then walks only what requests allocate, not the whole process."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, older, oldest)


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
