"""Query parameters of the gateway's JSON API, checked once: unknown names refused (a
silently ignored filter answers the wrong question), each given once, numbers in range,
times as local dates or zoned ISO 8601 instants. Every failure is an
:class:`~federation.errors.InvalidInput` (400 OperationOutcome) naming the parameter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from starlette.requests import Request

from federation.errors import InvalidInput

__all__ = ["instant", "int_param", "query"]


def query(request: Request, supported: Collection[str]) -> dict[str, str]:
    """The query parameters, each at most once, all of them ``supported``; empty values
    count as absent."""
    out: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in supported:
            raise InvalidInput(f"parameter '{name}' is not supported here; supported: "
                               f"{', '.join(sorted(supported))}")
        if name in out:
            raise InvalidInput(f"give parameter '{name}' once")
        if value.strip():
            out[name] = value.strip()
    return out


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        n = low - 1
    if not low <= n <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    return n


def instant(raw: str, name: str, tz: dt.tzinfo) -> dt.datetime:
    """``YYYY-MM-DD`` (the start of that local day in ``tz``; as an exclusive ``until``,
    the day is not included, as in the audit report) or an ISO 8601 date-time with a
    zone."""
    try:
        if len(raw) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(raw), dt.time(), tz)
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be a date YYYY-MM-DD or an ISO 8601 date-time with "
                           f"a zone (e.g. 2026-12-01T09:30+08:00), not '{raw[:40]}'") from None
    if value.tzinfo is None:
        raise InvalidInput(f"{name} needs a time zone (e.g. 2026-12-01T09:30+08:00)")
    return value
