"""The consortium's referral rules, read from data: who may refer to whom, the time
limits per urgency, the coded reasons for rejecting a referral, and the departments
each site receives referrals in (the vocabulary a form offers).

The packaged ``consortium.toml`` is the default; a consortium with other rules points the
gateway's ``referral_rules`` setting at its own copy. Checking a route is pure: it takes
the registry's sites as plain (id, tier, parent) facts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, PermissionDenied
from federation.workflow.timelimits import TimeLimits

__all__ = ["DIRECTIONS", "MAX_DEPARTMENT", "SiteFacts", "RouteRule", "ReferralRules",
           "load_rules"]

DIRECTIONS = ("upward", "downward", "redirect")
_TIERS = ("township", "county", "city")
#: the longest department name a referral keeps (its column's width)
MAX_DEPARTMENT = 64


@dataclass(frozen=True, slots=True)
class SiteFacts:
    site_id: str
    tier: str
    parent: str | None


@dataclass(frozen=True, slots=True)
class RouteRule:
    direction: str
    from_tier: str
    urgencies: frozenset[str]
    to: tuple[str, ...]

    def admits(self, origin: SiteFacts, target: SiteFacts) -> bool:
        for spec in self.to:
            if spec == "parent" and origin.parent == target.site_id:
                return True
            if spec == "child" and target.parent == origin.site_id:
                return True
            if spec.startswith("tier:") and target.tier == spec[5:]:
                return True
        return False


@dataclass(frozen=True, slots=True)
class ReferralRules:
    urgencies: tuple[str, ...]
    routes: tuple[RouteRule, ...]
    time_limits: TimeLimits
    reject_reasons: Mapping[str, str]
    source: str
    #: tier → departments, and site id → departments (a site's own list wins)
    tier_departments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    site_departments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def departments(self, site: SiteFacts) -> tuple[str, ...]:
        """The departments ``site`` receives referrals in, as the consortium lists them
        (empty when it lists none: the department is then free text)."""
        if site.site_id in self.site_departments:
            return self.site_departments[site.site_id]
        return self.tier_departments.get(site.tier, ())

    def check_route(self, direction: str, urgency: str, origin: SiteFacts,
                    target: SiteFacts) -> None:
        """PermissionDenied naming the rule that applies when ``origin`` may not send a
        ``direction`` referral at ``urgency`` to ``target``."""
        if origin.site_id == target.site_id:
            raise PermissionDenied(f"a site cannot refer a patient to itself ({origin.site_id})")
        candidates = [r for r in self.routes
                      if r.direction == direction and r.from_tier == origin.tier
                      and urgency in r.urgencies]
        if any(r.admits(origin, target) for r in candidates):
            return
        allowed = sorted({spec for r in candidates for spec in r.to})
        hint = (f"the consortium's rules allow: {', '.join(allowed)}" if allowed
                else f"the consortium's rules allow no {urgency} {direction} referral from a "
                     f"{origin.tier} site")
        raise PermissionDenied(
            f"a {urgency} {direction} referral from {origin.site_id} ({origin.tier}) to "
            f"{target.site_id} ({target.tier}) is not allowed; {hint} (rules: {self.source})")

    def targets(self, direction: str, urgency: str, origin: SiteFacts,
                sites: list[SiteFacts]) -> list[str]:
        """Every site ``origin`` may send such a referral to (for suggestions)."""
        out = []
        for site in sites:
            try:
                self.check_route(direction, urgency, origin, site)
            except PermissionDenied:
                continue
            out.append(site.site_id)
        return out


def load_rules(path: Path | None = None) -> ReferralRules:
    """The rules in ``path``, or the packaged default; ConfigError names what is wrong."""
    if path is None:
        text = resources.files("federation.referral").joinpath("consortium.toml").read_text(
            encoding="utf-8")
        source = "packaged consortium.toml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"referral rules {path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"referral rules {source} are not valid TOML: {exc}") from None
    return _parse(data, source)


def _parse(data: Mapping[str, Any], source: str) -> ReferralRules:
    urgencies = tuple(data.get("urgencies") or ())
    if not urgencies:
        raise ConfigError(f"{source}: 'urgencies' must list at least one urgency")
    routes = []
    for i, raw in enumerate(data.get("rule") or []):
        where = f"{source}: rule #{i + 1}"
        direction, from_tier = raw.get("direction"), raw.get("from")
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where}: direction must be one of {', '.join(DIRECTIONS)}")
        if from_tier not in _TIERS:
            raise ConfigError(f"{where}: from must be one of {', '.join(_TIERS)}")
        wanted = frozenset(raw.get("urgency") or urgencies)
        if not wanted <= set(urgencies):
            raise ConfigError(f"{where}: unknown urgency in {sorted(wanted)}")
        to = tuple(raw.get("to") or ())
        for spec in to:
            if spec not in ("parent", "child") and spec.removeprefix("tier:") not in _TIERS:
                raise ConfigError(f"{where}: target {spec!r} must be parent, child or "
                                  "tier:<township|county|city>")
        if not to:
            raise ConfigError(f"{where}: 'to' must name at least one target")
        routes.append(RouteRule(direction, from_tier, wanted, to))
    reasons = {str(k): str(v) for k, v in (data.get("reject_reasons") or {}).items()}
    if not reasons:
        raise ConfigError(f"{source}: [reject_reasons] must list at least one coded reason")
    tiers, sites = _departments(data.get("departments") or {}, source)
    return ReferralRules(urgencies, tuple(routes),
                         TimeLimits.from_mapping(data, urgencies, source), reasons, source,
                         tiers, sites)


def _departments(raw: Mapping[str, Any], source: str
                 ) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """``[departments]``: a list per tier, and ``[departments.sites]`` a list per site."""
    def names(value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(
                isinstance(v, str) and 0 < len(v.strip()) <= MAX_DEPARTMENT for v in value):
            raise ConfigError(f"{where} must be a list of department names (1–{MAX_DEPARTMENT} "
                              "characters each)")
        return tuple(v.strip() for v in value)

    tiers, sites = {}, {}
    for key, value in raw.items():
        if key == "sites":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [departments.sites] must map site ids to lists")
            sites = {str(site): names(v, f"{source}: departments.sites.{site}")
                     for site, v in value.items()}
        elif key in _TIERS:
            tiers[key] = names(value, f"{source}: departments.{key}")
        else:
            raise ConfigError(f"{source}: departments.{key} must be a tier "
                              f"({', '.join(_TIERS)}) or the [departments.sites] table")
    return tiers, sites
