"""Time limits per urgency, kept as data, and who is told when one is missed.

A workflow's data file has a ``[time_limits]`` table::

    [time_limits.urgent]
    acknowledge = "4h"       # the owner must triage (accept/reject/redirect) within this
    complete = "3d"          # reported as overdue in turnaround figures after this
    [escalation]
    notify = ["owner-site", "requester-site", "regional-admin"]

A task whose acknowledgement is overdue is *escalated* once: a flag on the task, an
event in its history, and a notice to each audience — a site's audience reaches that
site's node inbox (its duty list); ``regional-admin`` is kept for the administrators'
console. Durations are ``<n>m``, ``<n>h`` or ``<n>d`` (``<n>s`` for tests and drills). No I/O here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation.errors import ConfigError

__all__ = ["TimeLimit", "TimeLimits", "AUDIENCES", "parse_duration"]

AUDIENCES = ("owner-site", "requester-site", "regional-admin")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, where: str = "duration") -> dt.timedelta:
    m = _DURATION.match(str(text))
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"{where} must look like 30m, 4h or 2d (or 90s), got {text!r}")
    return dt.timedelta(**{_UNIT[m.group(2)]: int(m.group(1))})


@dataclass(frozen=True, slots=True)
class TimeLimit:
    acknowledge: dt.timedelta
    complete: dt.timedelta | None = None


@dataclass(frozen=True, slots=True)
class TimeLimits:
    limits: Mapping[str, TimeLimit]
    notify: tuple[str, ...]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], urgencies: tuple[str, ...],
                     source: str) -> TimeLimits:
        """Read ``[time_limits.*]`` and ``[escalation]``; every urgency must have a limit."""
        raw = data.get("time_limits") or {}
        limits = {}
        for urgency in urgencies:
            entry = raw.get(urgency)
            if not isinstance(entry, Mapping) or "acknowledge" not in entry:
                raise ConfigError(f"{source}: [time_limits.{urgency}] needs 'acknowledge'")
            where = f"{source}: time_limits.{urgency}"
            complete = entry.get("complete")
            limits[urgency] = TimeLimit(
                parse_duration(entry["acknowledge"], f"{where}.acknowledge"),
                parse_duration(complete, f"{where}.complete") if complete else None)
        notify = tuple((data.get("escalation") or {}).get("notify", AUDIENCES))
        unknown = sorted(set(notify) - set(AUDIENCES))
        if unknown:
            raise ConfigError(f"{source}: escalation.notify has unknown audience(s) "
                              f"{', '.join(unknown)}; use {', '.join(AUDIENCES)}")
        return cls(limits, notify)

    def acknowledge_due(self, urgency: str, created_at: dt.datetime) -> dt.datetime:
        return created_at + self.limits[urgency].acknowledge

    def complete_due(self, urgency: str, created_at: dt.datetime) -> dt.datetime | None:
        limit = self.limits[urgency].complete
        return None if limit is None else created_at + limit
