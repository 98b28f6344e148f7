"""Care relationships and open care episodes: pluggable sources the archive asks.

Two questions the archive cannot answer alone:

* *which sites care for this person?* — a site with an active referral or consult for
  the person, or a recent encounter with them, may read their regional record
  (:mod:`federation.archive.access`): :class:`CareRelationships`;
* *which sites have an open care episode for this person?* — their clinicians get the
  person's critical results from other sites (:mod:`federation.archive.alerts`):
  :class:`CareEpisodes`.

Each workflow answers for itself. The archive's own source reads archived Encounters
(:class:`EncounterCare`); the referral and consult workflows register theirs with one
line each, e.g.::

    register_care_source(lambda ctx: ReferralCare(ctx.engine))
    register_episode_source(lambda ctx: ReferralEpisodes(ctx.engine))

Sources are built per gateway from a :class:`CareContext` (so they share its engine) and
must keep their state in the store: any replica asks them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson

from federation.archive.search_params import date_range
from federation.archive.store import ArchiveStore

__all__ = [
    "CARE_SOURCES",
    "EPISODE_SOURCES",
    "CareContext",
    "CareEpisode",
    "CareEpisodes",
    "CareRegistry",
    "CareRelationships",
    "EncounterCare",
    "register_care_source",
    "register_episode_source",
]

log = logging.getLogger("federation.archive.care")


@runtime_checkable
class CareRelationships(Protocol):
    """A source may also answer for one site alone, ``cares(person_id, site_id) -> bool``,
    when that is cheaper (every archive read asks exactly that: does the reader's site
    care for the person?); :class:`CareRegistry` asks ``sites_caring_for`` otherwise."""

    def sites_caring_for(self, person_id: str) -> set[str]:
        """The sites with a current care relationship with the person (EMPI person id)."""
        ...


@dataclass(frozen=True, slots=True)
class CareEpisode:
    """An open referral, consult (or other episode) for a person, held by ``site_id``."""

    site_id: str
    kind: str                                   # referral | consult | …
    ref: str                                    # e.g. ServiceRequest/<id> at the gateway
    clinicians: tuple[str, ...] = ()            # practitioner ids to address, if known


@runtime_checkable
class CareEpisodes(Protocol):
    def open_episodes(self, person_id: str) -> list[CareEpisode]:
        ...


@dataclass(frozen=True, slots=True)
class CareContext:
    """What a source may use: the gateway's engine, archive and EMPI (person → records)."""

    engine: Any
    archive: ArchiveStore
    records_of: Callable[[str], list[tuple[str, str]]]   # person → [(site, patient id)]
    window_days: int
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


CareFactory = Callable[[CareContext], CareRelationships]
EpisodeFactory = Callable[[CareContext], CareEpisodes]
#: every care-relationship source the gateway builds (append with register_care_source)
CARE_SOURCES: list[CareFactory] = []
#: every open-episode source (append with register_episode_source)
EPISODE_SOURCES: list[EpisodeFactory] = []


def register_care_source(factory: CareFactory) -> CareFactory:
    CARE_SOURCES.append(factory)
    return factory


def register_episode_source(factory: EpisodeFactory) -> EpisodeFactory:
    EPISODE_SOURCES.append(factory)
    return factory


#: Encounters a single-site care check reads before it reads them all
_FIRST_LOOK = 20


class EncounterCare:
    """A site that had an encounter with the person within the window (by the
    Encounter's period: started or ended inside it, or still in progress) cares for them.
    Sees replicated sites only: a federate-mode site's encounters stay at the site, so
    its relationships come from the referral and consult workflows."""

    def __init__(self, ctx: CareContext) -> None:
        self._ctx = ctx

    def sites_caring_for(self, person_id: str) -> set[str]:
        return self._caring(self._ctx.records_of(person_id))

    def cares(self, person_id: str, site_id: str) -> bool:
        """Only the site's own records' Encounters are read: the last few to arrive
        first (a recent visit is usually among them), then, only if none of them is
        recent, all of them."""
        refs = [r for r in self._ctx.records_of(person_id) if r[0] == site_id]
        since = self._ctx.now() - dt.timedelta(days=self._ctx.window_days)
        latest = self._ctx.archive.latest(refs, "Encounter", _FIRST_LOOK)
        if any(_recent(orjson.loads(row.body), since) for row in latest):
            return True
        return len(latest) == _FIRST_LOOK and bool(self._caring(refs))

    def _caring(self, refs: list[tuple[str, str]]) -> set[str]:
        since = self._ctx.now() - dt.timedelta(days=self._ctx.window_days)
        found: set[str] = set()
        for row in self._ctx.archive.person_resources(refs, ["Encounter"]):
            if row.site_id not in found and _recent(orjson.loads(row.body), since):
                found.add(row.site_id)
        return found


def _recent(encounter: dict[str, Any], since: dt.datetime) -> bool:
    period = encounter.get("period") or {}
    if encounter.get("status") in ("in-progress", "arrived", "onleave"):
        return True
    for key in ("end", "start"):
        parsed = date_range(period.get(key) or "")
        if parsed is not None and parsed[1] > since:
            return True
    return False


register_care_source(EncounterCare)


class CareRegistry:
    """All registered sources, built once per gateway; a failing source is logged and
    counts as no relationship (deny, never allow, on error)."""

    def __init__(self, ctx: CareContext, care: Iterable[CareFactory] | None = None,
                 episodes: Iterable[EpisodeFactory] | None = None) -> None:
        self.context = ctx
        self._care = [f(ctx) for f in (CARE_SOURCES if care is None else care)]
        self._episodes = [f(ctx) for f in (EPISODE_SOURCES if episodes is None else episodes)]

    def sites_caring_for(self, person_id: str) -> set[str]:
        out: set[str] = set()
        for source in self._care:
            try:
                out |= set(source.sites_caring_for(person_id))
            except Exception:  # a broken plug-in must not open (or crash) every read
                log.exception("care source %s failed", type(source).__name__)
        return out

    def cares(self, person_id: str, site_id: str) -> bool:
        """Does ``site_id`` have a care relationship with the person? Sources are asked
        in turn until one says yes (each for that site alone where it can)."""
        for source in self._care:
            try:
                ask = getattr(source, "cares", None)
                if ask(person_id, site_id) if ask is not None else \
                        site_id in source.sites_caring_for(person_id):
                    return True
            except Exception:  # a broken plug-in must not open (or crash) every read
                log.exception("care source %s failed", type(source).__name__)
        return False

    def open_episodes(self, person_id: str) -> list[CareEpisode]:
        out: list[CareEpisode] = []
        for source in self._episodes:
            try:
                out += source.open_episodes(person_id)
            except Exception:
                log.exception("episode source %s failed", type(source).__name__)
        return out
