"""The consortium's consult rules, read from data: the kinds of consult, the specialist
pools at hub sites (who may claim what, and when they can meet), the time limits per
urgency and the meeting-link template.

The packaged ``consult.toml`` is the default; a consortium points the gateway's
``consult_rules`` setting at its own copy. Pure: no I/O beyond reading the file.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, InvalidInput, NotFound, PermissionDenied
from federation.workflow.timelimits import TimeLimits

__all__ = ["DAYS", "Pool", "Slots", "ConsultRules", "load_rules"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_POOL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Slots:
    """A pool's weekly availability (UTC), cut into slots of ``minutes``."""

    days: tuple[str, ...]
    start: dt.time
    end: dt.time
    minutes: int

    def is_slot(self, when: dt.datetime) -> bool:
        """Whether ``when`` (aware) is the start of one of the pool's slots."""
        t = when.astimezone(dt.UTC)
        if DAYS[t.weekday()] not in self.days or t.second or t.microsecond:
            return False
        minute = t.hour * 60 + t.minute
        first = self.start.hour * 60 + self.start.minute
        last = self.end.hour * 60 + self.end.minute
        return first <= minute and minute + self.minutes <= last \
            and (minute - first) % self.minutes == 0

    def upcoming(self, after: dt.datetime, count: int) -> list[dt.datetime]:
        """The next ``count`` slot starts after ``after`` (within two weeks)."""
        out: list[dt.datetime] = []
        day = after.astimezone(dt.UTC).date()
        for _ in range(14):
            if DAYS[day.weekday()] in self.days:
                at = dt.datetime.combine(day, self.start, tzinfo=dt.UTC)
                end = dt.datetime.combine(day, self.end, tzinfo=dt.UTC)
                while at + dt.timedelta(minutes=self.minutes) <= end and len(out) < count:
                    if at > after:
                        out.append(at)
                    at += dt.timedelta(minutes=self.minutes)
            day += dt.timedelta(days=1)
        return out[:count]


@dataclass(frozen=True, slots=True)
class Pool:
    pool_id: str
    site_id: str
    kind: str
    name: str
    members: tuple[str, ...]    # user ids, or ("*",): every specialist of the site
    slots: Slots

    def admits(self, site_id: str | None, user_id: str, roles: frozenset[str]) -> bool:
        return site_id == self.site_id and "specialist" in roles and (
            "*" in self.members or user_id in self.members)

    def check_member(self, site_id: str | None, user_id: str, roles: frozenset[str],
                     doing: str) -> None:
        if not self.admits(site_id, user_id, roles):
            raise PermissionDenied(f"{user_id} at {site_id} may not {doing}: only specialists "
                                   f"of pool {self.pool_id} at {self.site_id} may")


@dataclass(frozen=True, slots=True)
class ConsultRules:
    kinds: tuple[str, ...]
    urgencies: tuple[str, ...]
    pools: tuple[Pool, ...]
    time_limits: TimeLimits
    meeting_url: str
    source: str

    def pool(self, pool_id: str) -> Pool:
        for p in self.pools:
            if p.pool_id == pool_id:
                return p
        raise NotFound(f"no consult pool '{pool_id}'; pools: "
                       f"{', '.join(p.pool_id for p in self.pools)}")

    def pool_for(self, kind: str, pool_id: str | None) -> Pool:
        """The named pool (which must take ``kind``), or the first that takes it."""
        if kind not in self.kinds:
            raise InvalidInput(f"consult kind must be one of {', '.join(self.kinds)}")
        if pool_id:
            pool = self.pool(pool_id)
            if pool.kind != kind:
                raise InvalidInput(f"pool {pool_id} takes {pool.kind} consults, not {kind}")
            return pool
        for p in self.pools:
            if p.kind == kind:
                return p
        raise NotFound(f"no pool of the consortium takes {kind} consults ({self.source})")

    def meeting_link(self, consult_id: str, pool_id: str, start: dt.datetime) -> str:
        return self.meeting_url.format(consult=consult_id, pool=pool_id,
                                       slot=start.astimezone(dt.UTC).strftime("%Y%m%dT%H%MZ"))


def load_rules(path: Path | None = None) -> ConsultRules:
    """The rules in ``path``, or the packaged default; ConfigError names what is wrong."""
    if path is None:
        text = resources.files("federation.consult").joinpath("consult.toml").read_text(
            encoding="utf-8")
        source = "packaged consult.toml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"consult rules {path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"consult rules {source} are not valid TOML: {exc}") from None
    return parse_rules(data, source)


def parse_rules(data: Mapping[str, Any], source: str) -> ConsultRules:
    kinds = tuple(data.get("kinds") or ())
    urgencies = tuple(data.get("urgencies") or ())
    if not kinds or not urgencies:
        raise ConfigError(f"{source}: 'kinds' and 'urgencies' must each list at least one")
    url = str(data.get("meeting_url") or "")
    try:
        url.format(consult="c", pool="p", slot="s")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"{source}: meeting_url may use only {{consult}}, {{pool}} and "
                          "{slot}") from None
    pools = [_pool(raw, i, kinds, source) for i, raw in enumerate(data.get("pool") or [])]
    if len({p.pool_id for p in pools}) != len(pools):
        raise ConfigError(f"{source}: pool ids must be unique")
    return ConsultRules(kinds, urgencies, tuple(pools),
                        TimeLimits.from_mapping(data, urgencies, source), url, source)


def _pool(raw: Mapping[str, Any], i: int, kinds: tuple[str, ...], source: str) -> Pool:
    where = f"{source}: pool #{i + 1}"
    pool_id, site, kind = str(raw.get("id", "")), str(raw.get("site", "")), raw.get("kind")
    if not _POOL_ID.match(pool_id):
        raise ConfigError(f"{where}: id must be lowercase letters, digits and dashes")
    if not site:
        raise ConfigError(f"{where}: site is required (the hub site's id)")
    if kind not in kinds:
        raise ConfigError(f"{where}: kind must be one of {', '.join(kinds)}")
    members = tuple(str(m) for m in raw.get("members") or ())
    if not members:
        raise ConfigError(f"{where}: members must list user ids, or \"*\"")
    slots = raw.get("slots") or {}
    days = tuple(slots.get("days") or DAYS[:5])
    if not set(days) <= set(DAYS):
        raise ConfigError(f"{where}: slots.days must be among {', '.join(DAYS)}")
    start, end = (_time(slots.get(k, d), f"{where}: slots.{k}")
                  for k, d in (("start", "09:00"), ("end", "17:00")))
    minutes = int(slots.get("minutes", 30))
    if not 5 <= minutes <= 240 or end <= start:
        raise ConfigError(f"{where}: slots need start < end and 5–240 minutes each")
    return Pool(pool_id, site, str(kind), str(raw.get("name") or pool_id), members,
                Slots(days, start, end, minutes))


def _time(text: str, where: str) -> dt.time:
    m = _HHMM.match(str(text))
    if not m:
        raise ConfigError(f"{where} must look like 09:30, got {text!r}")
    return dt.time(int(m[1]), int(m[2]))
