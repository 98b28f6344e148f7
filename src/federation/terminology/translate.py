"""Local → standard code translation over FHIR ConceptMaps (the ``$translate`` operation).

Implements the R4 ``ConceptMap/$translate`` semantics
(https://hl7.org/fhir/R4/conceptmap-operation-translate.html): the in-parameters
``system``, ``code``, ``targetsystem``, ``url`` (pick one map) and ``reverse``; the
out-parameters ``result`` (true when at least one match is usable, i.e. its equivalence is
not ``unmatched`` or ``disjoint``), ``message`` and ``match`` (``equivalence``, ``concept``
Coding, ``source`` = the ConceptMap's canonical URL). Group ``unmapped`` modes
``provided`` and ``fixed`` (R4 §4.10 ConceptMap.group.unmapped) apply when no element
matches; ``other-map`` is not followed.

Pure Python: no HTTP or SQL here; :mod:`federation.terminology.http` wraps it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fhir.resources.R4B.conceptmap import ConceptMap

from federation.errors import InvalidInput, MappingError

__all__ = [
    "Match",
    "TranslateResult",
    "Terminology",
    "PACKAGED_MAPS",
    "load_packaged_maps",
    "to_parameters",
]

#: the ConceptMaps shipped in ``federation.terminology.data``
PACKAGED_MAPS = (
    "conceptmap-diagnosis-icd10.json",
    "conceptmap-lab-loinc.json",
    "conceptmap-sex-gender.json",
    "conceptmap-marital-status.json",
)

#: equivalences that do not make ``result`` true (R4 $translate: "result … acceptable match")
_NOT_A_MATCH = frozenset({"unmatched", "disjoint"})


@dataclass(frozen=True, slots=True)
class Match:
    """One ``match`` of the out-parameters."""

    equivalence: str
    system: str
    code: str
    display: str | None
    source: str          # the ConceptMap's canonical url


@dataclass(frozen=True, slots=True)
class TranslateResult:
    result: bool
    message: str | None = None
    matches: tuple[Match, ...] = field(default_factory=tuple)


def _validated(document: dict[str, Any], origin: str) -> dict[str, Any]:
    """Validate one ConceptMap with the R4B model; the plain dict is what we index."""
    if document.get("resourceType") != "ConceptMap":
        raise MappingError(f"{origin} is not a ConceptMap")
    try:
        ConceptMap.model_validate(document)
    except ValueError as exc:
        raise MappingError(f"{origin} is not a valid FHIR ConceptMap: {exc}") from exc
    return document


def load_packaged_maps() -> list[dict[str, Any]]:
    """The packaged ConceptMaps, each validated as FHIR R4B at load."""
    folder = resources.files("federation.terminology.data")
    return [
        _validated(json.loads(folder.joinpath(name).read_text(encoding="utf-8")), name)
        for name in PACKAGED_MAPS
    ]


class Terminology:
    """An in-memory index of ConceptMaps; immutable after construction (safe to share)."""

    def __init__(self, maps: Iterable[dict[str, Any]]) -> None:
        self._maps = tuple(maps)
        # (source system, code) -> [(map url, group, element)]
        self._forward: dict[tuple[str, str], list[tuple[str, dict, dict]]] = {}
        self._groups: dict[str, list[tuple[str, dict]]] = {}
        for cmap in self._maps:
            url = cmap.get("url", "")
            for group in cmap.get("group", []):
                self._groups.setdefault(group.get("source", ""), []).append((url, group))
                for element in group.get("element", []):
                    key = (group.get("source", ""), element.get("code", ""))
                    self._forward.setdefault(key, []).append((url, group, element))

    @classmethod
    def default(cls, extra_files: Iterable[Path] = ()) -> Terminology:
        """The packaged maps plus any site-specific ConceptMap JSON files."""
        maps = load_packaged_maps()
        for path in extra_files:
            try:
                document = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise MappingError(f"cannot read ConceptMap file {path}: {exc}") from exc
            maps.append(_validated(document, str(path)))
        return cls(maps)

    @property
    def concept_maps(self) -> tuple[dict[str, Any], ...]:
        return self._maps

    @property
    def source_systems(self) -> frozenset[str]:
        return frozenset(self._groups)

    def translate(self, system: str, code: str, target_system: str | None = None, *,
                  url: str | None = None, reverse: bool = False) -> TranslateResult:
        """R4 ``$translate`` for one (system, code); see the module docstring."""
        if not system or not code:
            raise InvalidInput("$translate needs both 'system' and 'code'")
        if reverse:
            matches = self._reverse(system, code, target_system, url)
        else:
            matches = self._lookup(system, code, target_system, url)
            if not matches:
                matches = self._unmapped(system, code, target_system, url)
        if matches is None:
            scope = f" to {target_system}" if target_system else ""
            return TranslateResult(False, f"no ConceptMap translates from {system}{scope}")
        if not any(m.equivalence not in _NOT_A_MATCH for m in matches):
            return TranslateResult(False, f"code {code!r} of {system} has no mapping"
                                   + (f" to {target_system}" if target_system else ""),
                                   tuple(matches))
        return TranslateResult(True, None, tuple(matches))

    # A return of None means "no map covers this system at all", [] means "no mapping".
    def _groups_for(self, system: str, target: str | None, url: str | None):
        return [(u, g) for u, g in self._groups.get(system, [])
                if (target is None or g.get("target") == target) and (url is None or u == url)]

    def _lookup(self, system, code, target, url) -> list[Match] | None:
        if not self._groups_for(system, target, url):
            return None
        out: list[Match] = []
        for map_url, group, element in self._forward.get((system, code), []):
            if (target and group.get("target") != target) or (url and map_url != url):
                continue
            for tgt in element.get("target", []):
                out.append(Match(tgt.get("equivalence", "equivalent"), group.get("target", ""),
                                 tgt.get("code", ""), tgt.get("display"), map_url))
        return out

    def _unmapped(self, system, code, target, url) -> list[Match] | None:
        groups = self._groups_for(system, target, url)
        if not groups:
            return None
        out: list[Match] = []
        for map_url, group in groups:
            rule = group.get("unmapped") or {}
            if rule.get("mode") == "provided":
                out.append(Match("equal", group.get("target", ""), code, None, map_url))
            elif rule.get("mode") == "fixed" and rule.get("code"):
                out.append(Match("inexact", group.get("target", ""), rule["code"],
                                 rule.get("display"), map_url))
        return out

    def _reverse(self, system, code, target, url) -> list[Match] | None:
        """``reverse=true``: ``system``/``code`` are a *target*; find the sources."""
        out: list[Match] = []
        covered = False
        for cmap in self._maps:
            if url and cmap.get("url") != url:
                continue
            for group in cmap.get("group", []):
                if group.get("target") != system or (target and group.get("source") != target):
                    continue
                covered = True
                for element in group.get("element", []):
                    for tgt in element.get("target", []):
                        if tgt.get("code") == code:
                            out.append(Match(tgt.get("equivalence", "equivalent"),
                                             group.get("source", ""), element.get("code", ""),
                                             element.get("display"), cmap.get("url", "")))
        return out if covered else None


def to_parameters(result: TranslateResult) -> dict[str, Any]:
    """The FHIR ``Parameters`` resource ``$translate`` returns (R4 out-parameters)."""
    parameter: list[dict[str, Any]] = [{"name": "result", "valueBoolean": result.result}]
    if result.message:
        parameter.append({"name": "message", "valueString": result.message})
    for match in result.matches:
        coding: dict[str, Any] = {"system": match.system, "code": match.code}
        if match.display:
            coding["display"] = match.display
        parameter.append({"name": "match", "part": [
            {"name": "equivalence", "valueCode": match.equivalence},
            {"name": "concept", "valueCoding": coding},
            {"name": "source", "valueUri": match.source},
        ]})
    return {"resourceType": "Parameters", "parameter": parameter}
