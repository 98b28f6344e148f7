"""A client channel that follows its certificate files: rotation without dropping calls.

gRPC Python's client credentials are fixed when a channel is made, so a client whose
certificate was rotated on disk must make a new channel to present the new one.
:class:`RotatingChannel` does that behind the ``grpc.aio.Channel`` interface, for the
node's link to the gateway and the gateway's channels to the nodes alike:

* each call looks (cheaply, see :class:`~federation.security.rotation.TlsFiles`) whether the
  files brought new material; if so, a new channel is opened and this call and every
  later one go out on it;
* the previous channel is closed as soon as the calls already on it have finished (a long
  fetch or feed pull goes on over the old connection); calls still running when the
  grace period ends are cancelled — so a client that holds a stream open indefinitely
  (the node's inbox stream) restarts it on the new channel when
  :meth:`RotatingChannel.rotation` tells it to.

Stubs keep working across rotations: the multi-callables handed to them pick the
current channel at call time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from federation.security.rotation import TlsFiles
from federation.security.tls import TlsMaterial, channel_credentials

__all__ = ["RETIRE_GRACE_SECONDS", "RotatingChannel"]

log = logging.getLogger("federation.rpc.rotating")

#: how long calls already running on a retired channel may go on before they are cancelled
#: and it is closed: longer than any deadline the gateway and nodes set (a feed pull: 600 s)
RETIRE_GRACE_SECONDS = 900.0

_Options = Sequence[tuple[str, Any]]


class _MultiCallable:
    """A multi-callable bound to a method, not to a channel: each call goes out on the
    owner's current channel (the underlying multi-callable is kept per channel)."""

    __slots__ = ("_owner", "_kind", "_method", "_kwargs", "_bound")

    def __init__(self, owner: RotatingChannel, kind: str, method: str,
                 kwargs: dict[str, Any]) -> None:
        self._owner, self._kind, self._method, self._kwargs = owner, kind, method, kwargs
        self._bound: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current_channel()
        if self._bound is None or self._bound[0] is not channel:
            self._bound = (channel, getattr(channel, self._kind)(self._method, **self._kwargs))
        call = self._bound[1](*args, **kwargs)
        self._owner._track(channel, call)
        return call


class RotatingChannel(grpc.aio.Channel):
    """An mTLS ``grpc.aio`` channel to ``target`` whose client certificate follows ``files``."""

    def __init__(self, target: str, files: TlsFiles, options: _Options, *,
                 grace: float = RETIRE_GRACE_SECONDS) -> None:
        self._target = target
        self._files = files
        self._options = list(options)
        self._grace = grace
        self._generation, material = files.current()
        self._channel = self._open(material)
        self._retiring: set[grpc.aio.Channel] = set()
        self._closers: set[asyncio.Task[None]] = set()  # strong references while they run
        self._running: dict[grpc.aio.Channel, int] = {}  # calls not yet finished, per channel
        self._closed = False

    def _open(self, material: TlsMaterial) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(self._target, channel_credentials(material),
                                       options=self._options)

    # ------------------------------------------------------------------ rotation

    @property
    def generation(self) -> int:
        """Which material (of :attr:`TlsFiles.generation`) new calls go out with."""
        return self._generation

    @property
    def retiring(self) -> int:
        """Previous channels still open for the calls they carry."""
        return len(self._retiring)

    def current_channel(self) -> grpc.aio.Channel:
        """The channel for a new call, opened afresh if the certificate files changed."""
        if self._closed:
            return self._channel  # a closed channel answers the call with its own error
        generation, material = self._files.current()
        if generation != self._generation:
            old, self._channel = self._channel, self._open(material)
            self._generation = generation
            self._retire(old)
        return self._channel

    def _track(self, channel: grpc.aio.Channel, call: Any) -> None:
        self._running[channel] = self._running.get(channel, 0) + 1

        def finished(_: object) -> None:
            left = self._running.get(channel, 1) - 1
            if left:
                self._running[channel] = left
            else:
                self._running.pop(channel, None)

        call.add_done_callback(finished)

    def _retire(self, old: grpc.aio.Channel) -> None:
        log.info("channel to %s: new calls present the rotated certificate; the previous "
                 "connection closes once its calls finish (at most %.0f s)", self._target,
                 self._grace)
        self._retiring.add(old)

        async def close() -> None:
            try:
                loop = asyncio.get_running_loop()
                until = loop.time() + self._grace
                while self._running.get(old) and loop.time() < until:
                    await asyncio.sleep(min(0.2, self._grace))
                if self._running.get(old):
                    log.warning("channel to %s: %d call(s) still running on the previous "
                                "certificate after %.0f s are cancelled", self._target,
                                self._running[old], self._grace)
                await old.close()
            finally:
                self._retiring.discard(old)
                self._running.pop(old, None)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the event loop: close() will close it
            return
        task = loop.create_task(close(), name=f"retire {self._target}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def rotation(self, after: int) -> int:
        """Wait until new calls go out with material newer than generation ``after``
        (looking at the files as often as they may change); returns the new generation."""
        while True:
            self.current_channel()
            if self._generation != after or self._closed:
                return self._generation
            await asyncio.sleep(max(0.05, self._files.recheck_seconds))

    # ------------------------------------------------------------------ grpc.aio.Channel

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, **kwargs: Any) -> Any:
        return _MultiCallable(self, "unary_unary", method, dict(
            request_serializer=request_serializer,
            response_deserializer=response_deserializer, **kwargs))

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, **kwargs: Any) -> Any:
        return _MultiCallable(self, "unary_stream", method, dict(
            request_serializer=request_serializer,
            response_deserializer=response_deserializer, **kwargs))

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, **kwargs: Any) -> Any:
        return _MultiCallable(self, "stream_unary", method, dict(
            request_serializer=request_serializer,
            response_deserializer=response_deserializer, **kwargs))

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, **kwargs: Any) -> Any:
        return _MultiCallable(self, "stream_stream", method, dict(
            request_serializer=request_serializer,
            response_deserializer=response_deserializer, **kwargs))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current_channel().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current_channel().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current_channel().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        self._closed = True
        channels = [self._channel, *self._retiring]
        await asyncio.gather(*(c.close(grace) for c in channels), return_exceptions=True)

    async def __aenter__(self) -> RotatingChannel:
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.close()
