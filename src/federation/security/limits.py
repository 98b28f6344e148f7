"""Rate limits: a token bucket per caller, so one busy user or node cannot starve the rest.

Each caller (a signed-in person, a node, a client address at the sign-in endpoint) has a
bucket of ``burst`` tokens refilled at ``rate`` per second; a call takes one token, and a
call that finds the bucket empty is refused with :class:`~federation.errors.RateLimited`,
which says when to retry (HTTP 429 + ``Retry-After``, RFC 6585 §4; gRPC
``RESOURCE_EXHAUSTED``).

The buckets live in each gateway replica's memory, on purpose: a limit is protection,
not accounting, and consulting the shared database on every call would cost more than the
calls it protects. With N replicas behind a balancer a caller gets at most N × the rate;
the settings say per replica. Idle buckets are forgotten so the table stays small.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from federation.errors import RateLimited

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, rate: float, burst: int, *, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst, self._what = rate, burst, what
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}   # key → (tokens, updated)
        self._lock = threading.Lock()
        self._calls = 0

    def take(self, key: str) -> None:
        """Take one token for ``key`` or raise :class:`RateLimited`."""
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(
                    f"too many requests from {self._what} {key}: at most {self.rate:g} a "
                    f"second (bursts of {self.burst}); try again in {wait} s",
                    retry_after=wait)
            self._buckets[key] = (tokens - 1.0, now)
            self._calls += 1
            if self._calls % 10_000 == 0:
                self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, (_, t) in self._buckets.items() if now - t > full_after]:
            del self._buckets[key]
