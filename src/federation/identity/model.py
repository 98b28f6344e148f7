"""The Fellegi–Sunter model: match weights learnt from the data, decisions, explanations.

For each field and agreement level (see :mod:`federation.identity.compare`) the model
holds **m** — how often true matches show that level — and **u** — how often two random
records do. A pair's *match weight* is the prior log-odds plus, per field, log2(m/u): the
bits of evidence that field gives. Nothing is hand-set:

* **u** comes from the data: the top level ("same value") from the value frequencies
  themselves (Σ p², exact even for rare identifiers), the other levels from comparing
  random pairs of records;
* **m** and the prior (the share of candidate pairs that match) come from
  expectation–maximisation over the candidate pairs that blocking produces, with u held
  fixed — the procedure Splink and the record-linkage literature recommend.

Decisions (:meth:`LinkageModel.decide`): weight ≥ ``upper`` → link; ≥ ``lower`` →
review; else a new person. Guards cap an automatic link at *review* whatever the
weight, because they are the cases where the fields' independence assumption fails
(households, twins, namesakes):

* ``id-conflict`` — both records carry valid, different resident IDs;
* ``given-name-conflict`` — both have a given name and the names are unrelated
  (twins share everything else), and no personal identifier agrees: a verified resident
  ID or the same other identifier (insurance card, social security number) is the
  person's own — a twin's differs — so then the weight decides (a renamed person, a
  nickname, a clerk's slip);
* ``uncorroborated`` — nothing beyond name, birth date and sex agrees *as evidence*: no
  ID, other ID, phone, address or postcode agreement worth :data:`CORROBORATING_BITS`
  (same-name-same-birthday strangers in one town share its postcode).

Two combinations decide outright, ``different-person`` — a new person, not a review
item: unrelated given names *and* unrelated birth dates (household members share a
phone and an address, which alone would outweigh the names); and different resident IDs
together with either of the other guards (twins, namesakes with their own IDs). Neither
applies when a personal identifier agrees.

The last two guards are **learnt**, like the weights (:func:`learn_guards`): each is on
when the data show the dependence it guards against — candidate pairs of the guarded
shape whose verified resident IDs prove them to be *different* people (twins: same
surname and birth date, unrelated given names; namesakes: same name and birth date,
nothing else shared). Data without such evidence (no twins among those with IDs, or no
IDs at all, as in the FEBRL sets) leave them off and the weights decide. ``id-conflict``
is always on. A model without a ``guards`` entry (older files) has all three on.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from federation.errors import ConfigError
from federation.identity.blocking import KINDS
from federation.identity.compare import COMPARISONS, FIELDS, NULL, compare
from federation.identity.features import Features

__all__ = ["ALL_GUARDS", "BLOCKED_FIELDS", "CORROBORATING_BITS", "Contribution", "LinkageModel", "Score", "estimate",
           "guards", "learn_guards", "level_counts"]

LINK, REVIEW, NEW = "link", "review", "new"
_FLOOR = 1e-7
_I = {name: i for i, name in enumerate(FIELDS)}
ALL_GUARDS = frozenset({"id-conflict", "given-name-conflict", "uncorroborated"})
#: pairs of proven different people in the guarded shape that switch a learnt guard on
GUARD_EVIDENCE = 3


@dataclass(frozen=True, slots=True)
class Contribution:
    field: str
    level: int
    meaning: str
    bits: float

    def as_json(self) -> dict[str, object]:
        return {"field": self.field, "level": self.level, "meaning": self.meaning,
                "bits": round(self.bits, 2)}


@dataclass(frozen=True, slots=True)
class Score:
    levels: tuple[int, ...]
    weight: float
    guards: tuple[str, ...]

    @property
    def probability(self) -> float:
        return 1.0 / (1.0 + 2.0 ** -max(min(self.weight, 60.0), -60.0))


@dataclass(slots=True)
class LinkageModel:
    #: m[field][level], u[field][level]
    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prior: float
    upper: float = 6.0
    lower: float = 0.0
    trained_on: dict[str, object] = field(default_factory=dict)
    #: the guards in force (see the module docstring; learnt by :func:`learn_guards`)
    guards_on: frozenset[str] = ALL_GUARDS
    _bits: tuple[tuple[float, ...], ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        for c in COMPARISONS:
            for table, name in ((self.m, "m"), (self.u, "u")):
                if len(table.get(c.field, ())) != len(c.levels):
                    raise ConfigError(f"linkage model: {name} of '{c.field}' must have "
                                      f"{len(c.levels)} levels")
        unknown = set(self.guards_on) - ALL_GUARDS
        if unknown:
            raise ConfigError(f"linkage model: unknown guards {sorted(unknown)}")
        if not 0.0 < self.prior < 1.0 or self.lower > self.upper:
            raise ConfigError("linkage model: prior must be in (0, 1) and lower ≤ upper")
        self._bits = tuple(tuple(math.log2(max(m, _FLOOR) / max(u, _FLOOR))
                                 for m, u in zip(self.m[f], self.u[f]))
                           for f in FIELDS)

    # ----------------------------------------------------------------- scoring

    @property
    def prior_bits(self) -> float:
        return math.log2(self.prior / (1.0 - self.prior))

    def weight(self, levels: Sequence[int]) -> float:
        bits = self._bits
        return self.prior_bits + sum(bits[i][lv] for i, lv in enumerate(levels) if lv != NULL)

    def score(self, a: Features, b: Features) -> Score:
        return self.score_levels(compare(a, b))

    def score_levels(self, levels: Sequence[int]) -> Score:
        return Score(tuple(levels), self.weight(levels), self.guards(levels))

    def guards(self, levels: Sequence[int]) -> tuple[str, ...]:
        return guards(levels, self._bits, self.guards_on)

    def decide(self, score: Score) -> str:
        if "different-person" in score.guards:
            return NEW
        if score.weight >= self.upper:
            return REVIEW if score.guards else LINK
        return REVIEW if score.weight >= self.lower else NEW

    def explain(self, levels: Sequence[int]) -> list[Contribution]:
        out = [Contribution("prior", 0, "share of candidate pairs that match", self.prior_bits)]
        for i, c in enumerate(COMPARISONS):
            lv = levels[i]
            if lv != NULL:
                out.append(Contribution(c.field, lv, c.levels[lv], self._bits[i][lv]))
        return out

    # ----------------------------------------------------------------- persistence

    def as_json(self) -> dict[str, object]:
        return {"format": "federation.identity.model/1", "prior": self.prior,
                "upper": self.upper, "lower": self.lower,
                "m": {f: [round(x, 8) for x in self.m[f]] for f in FIELDS},
                "u": {f: [float(f"{x:.6g}") for x in self.u[f]] for f in FIELDS},
                "levels": {c.field: list(c.levels) for c in COMPARISONS},
                "guards": sorted(self.guards_on), "trained_on": self.trained_on}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LinkageModel:
        try:
            return cls(m={k: list(map(float, v)) for k, v in data["m"].items()},  # type: ignore[attr-defined]
                       u={k: list(map(float, v)) for k, v in data["u"].items()},  # type: ignore[attr-defined]
                       prior=float(data["prior"]), upper=float(data["upper"]),  # type: ignore[arg-type]
                       lower=float(data["lower"]),  # type: ignore[arg-type]
                       trained_on=dict(data.get("trained_on") or {}),  # type: ignore[call-overload]
                       guards_on=frozenset(map(str, data.get("guards", ALL_GUARDS))))  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"linkage model is malformed ({type(exc).__name__}: {exc})"
                              ) from None

    @classmethod
    def load(cls, path: Path) -> LinkageModel:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read linkage model {path}: {exc}") from None

    @classmethod
    def default(cls) -> LinkageModel:
        """The model shipped with the package (estimated by ``federation identity tune``
        from a synthetic consortium; ``tune --apply`` replaces it with the site data's)."""
        text = resources.files("federation.identity").joinpath("default_model.json")
        return cls.from_json(json.loads(text.read_text(encoding="utf-8")))


def guards(levels: Sequence[int], bits: Sequence[Sequence[float]],
           enabled: frozenset[str] = ALL_GUARDS) -> tuple[str, ...]:
    """The guards a pair's level pattern trips, of those ``enabled`` (module docstring);
    ``bits`` is the model's weight table, which says what corroborates."""
    same_id = levels[_I["national_id"]] == 1 or levels[_I["other_id"]] == 2
    out = []
    if levels[_I["national_id"]] == 0 and "id-conflict" in enabled:
        out.append("id-conflict")
    if levels[_I["given"]] == 0 and not same_id and "given-name-conflict" in enabled:
        out.append("given-name-conflict")
    if not _corroborated(levels, bits) and "uncorroborated" in enabled:
        out.append("uncorroborated")
    if not same_id and (
            ("given-name-conflict" in out and levels[_I["birth_date"]] == 0)
            or ("id-conflict" in out and len(out) > 1)):
        return ("different-person", *out)
    return tuple(out)


#: fields beyond name, birth date and sex that can corroborate a match
_CORROBORATING = tuple(_I[f] for f in ("national_id", "other_id", "phone", "address",
                                       "postcode"))
#: a field corroborates when its level is worth this many bits: agreeing that way is at
#: least 16 times likelier for one person than for two random records. A town's postcode
#: that half the records share, or a phone one digit off (a relative's), is not enough.
CORROBORATING_BITS = 4.0


def _corroborated(levels: Sequence[int], bits: Sequence[Sequence[float]]) -> bool:
    return any(levels[i] > 0 and bits[i][levels[i]] >= CORROBORATING_BITS
               for i in _CORROBORATING)


def _twin_shape(levels: Sequence[int]) -> bool:
    """Same surname and birth date, unrelated given names."""
    return (levels[_I["family"]] >= 2 and levels[_I["birth_date"]] == 3
            and levels[_I["given"]] == 0)


def _namesake_shape(levels: Sequence[int], bits: Sequence[Sequence[float]]) -> bool:
    """Same name and birth date, nothing else shared (the resident ID left aside)."""
    rest = list(levels)
    rest[_I["national_id"]] = NULL
    return (levels[_I["family"]] >= 2 and levels[_I["given"]] >= 3
            and levels[_I["birth_date"]] == 3 and not _corroborated(rest, bits))


def learn_guards(patterns: Mapping[tuple[int, tuple[int, ...]], int],
                 bits: Sequence[Sequence[float]]
                 ) -> tuple[frozenset[str], dict[str, dict[str, int]]]:
    """Which learnt guards the data call for, and the evidence: per guard, how many
    candidate pairs of its shape have different verified resident IDs (proven different
    people) and how many the same. A guard is on with at least :data:`GUARD_EVIDENCE`
    pairs of different people."""
    evidence = {"given-name-conflict": {"different_ids": 0, "same_id": 0},
                "uncorroborated": {"different_ids": 0, "same_id": 0}}
    shapes = (("given-name-conflict", _twin_shape),
              ("uncorroborated", lambda lv: _namesake_shape(lv, bits)))
    for (_kinds, levels), count in patterns.items():
        nid = levels[_I["national_id"]]
        if nid == NULL:
            continue
        for name, shape in shapes:
            if shape(levels):
                evidence[name]["different_ids" if nid == 0 else "same_id"] += count
    on = {"id-conflict"} | {g for g, e in evidence.items()
                            if e["different_ids"] >= GUARD_EVIDENCE}
    return frozenset(on), evidence


# ---------------------------------------------------------------------- estimation

def level_counts(records: Sequence[Features], pairs: int, rng: random.Random
                 ) -> dict[str, Counter[int]]:
    """Level counts of ``pairs`` random pairs (u's lower levels)."""
    counts: dict[str, Counter[int]] = {f: Counter() for f in FIELDS}
    n = len(records)
    if n < 2:
        return counts
    for _ in range(pairs):
        i, j = rng.randrange(n), rng.randrange(n - 1)
        j += j >= i
        for f, lv in zip(FIELDS, compare(records[i], records[j])):
            if lv != NULL:
                counts[f][lv] += 1
    return counts


def _value_of(f: str, r: Features) -> object:
    return {"family": r.family, "given": r.given, "birth_date": r.birth_date, "sex": r.sex,
            "national_id": r.national_id, "other_id": r.other_id, "phone": r.phone,
            "address": r.address_tokens or None, "postcode": r.postcode}[f]


def _exact_share(records: Iterable[Features], f: str) -> float | None:
    """Σ p² over the field's values: the chance two random records share one."""
    values = Counter(v for r in records if (v := _value_of(f, r)) is not None)
    total = sum(values.values())
    if total < 2:
        return None
    return sum(c * (c - 1) for c in values.values()) / (total * (total - 1))


def estimate_u(records: Sequence[Features], *, pairs: int = 200_000,
               rng: random.Random | None = None) -> dict[str, list[float]]:
    rng = rng or random.Random(20261122)
    counts = level_counts(records, pairs, rng)
    u: dict[str, list[float]] = {}
    for c in COMPARISONS:
        top = len(c.levels) - 1
        seen = counts[c.field]
        total = sum(seen.values())
        share = _exact_share(records, c.field)
        u_top = share if share is not None else (seen[top] + 1) / (total + 2)
        u_top = max(u_top, _FLOOR)
        lower = [(seen[lv] + 0.5) for lv in range(top)]
        scale = (1.0 - u_top) / sum(lower)
        u[c.field] = [x * scale for x in lower] + [u_top]
    return u


#: fields each blocking kind fixes: EM on that kind's pairs must not learn them (the
#: pairs agree on them by construction); birth date and sex come with the resident ID
BLOCKED_FIELDS: dict[str, frozenset[str]] = {
    "id": frozenset({"national_id", "birth_date", "sex"}),
    "oi": frozenset({"other_id"}),
    "ph": frozenset({"phone"}),
    "nt": frozenset({"family", "given", "phone"}),
    "nb": frozenset({"family", "given", "birth_date"}),
    "fb": frozenset({"family", "birth_date"}),
    "gb": frozenset({"given", "birth_date"}),
    "ny": frozenset({"family", "given", "birth_date"}),
    "np": frozenset({"family", "given", "postcode"}),
    "dp": frozenset({"birth_date", "postcode"}),
    "od": frozenset({"other_id"}),
}
#: kinds whose pairs are unlike the matches EM should find: a shared phone is mostly a
#: household (same address, different people), which EM would take for a match class
_NOT_FOR_TRAINING = frozenset({"ph"})


def _em(patterns: list[tuple[tuple[int, ...], int]], u: dict[str, list[float]],
        skip: frozenset[int], iterations: int = 60
        ) -> tuple[dict[str, list[float]], float, float]:
    """EM with u fixed over one blocking kind's patterns, ``skip`` fields left out:
    (m, the kind's match share, expected matches)."""
    m = {c.field: _start_m(len(c.levels)) for c in COMPARISONS}
    prior, total = 0.5, sum(n for _, n in patterns)
    matched = 0.0
    for _ in range(iterations):
        num = {c.field: [1e-6] * len(c.levels) for c in COMPARISONS}
        matched = 0.0
        for levels, count in patterns:
            pm, pu = prior, 1.0 - prior
            for i, lv in enumerate(levels):
                if lv != NULL and i not in skip:
                    f = FIELDS[i]
                    pm *= max(m[f][lv], _FLOOR)
                    pu *= max(u[f][lv], _FLOOR)
            w = count * (pm / (pm + pu))
            matched += w
            for i, lv in enumerate(levels):
                if lv != NULL and i not in skip:
                    num[FIELDS[i]][lv] += w
        new_prior = min(max(matched / total, 1e-9), 1 - 1e-9)
        m = {f: [x / sum(v) for x in v] for f, v in num.items()}
        converged = abs(new_prior - prior) < 1e-6
        prior = new_prior
        if converged:
            break
    return m, prior, matched


def _start_m(levels: int) -> list[float]:
    """EM's starting point: true matches mostly agree fully."""
    if levels == 1:
        return [1.0]
    rest = 0.1 / (levels - 1)
    return [rest] * (levels - 1) + [0.9]


def estimate_m(patterns: Mapping[tuple[int, tuple[int, ...]], int],
               u: dict[str, list[float]]) -> dict[str, list[float]]:
    """m per field: EM on the candidate pairs of each blocking kind (every pair that
    shares a key of that kind), leaving out the fields that kind fixes, then averaged
    over the kinds, weighted by their expected matches."""
    by_kind: dict[str, list[tuple[tuple[int, ...], int]]] = {}
    for (mask, levels), count in patterns.items():
        for bit, kind in enumerate(KINDS):
            if mask >> bit & 1:
                by_kind.setdefault(kind, []).append((levels, count))
    kinds = [k for k in by_kind if k not in _NOT_FOR_TRAINING] or list(by_kind)
    if not kinds:
        raise ConfigError("cannot estimate match weights: blocking found no candidate pairs")
    sums = {c.field: [0.0] * len(c.levels) for c in COMPARISONS}
    weights = {c.field: 0.0 for c in COMPARISONS}
    for kind in kinds:
        skip = frozenset(FIELDS.index(f) for f in BLOCKED_FIELDS.get(kind, ()))
        m, _share, matched = _em(by_kind[kind], u, skip)
        for i, c in enumerate(COMPARISONS):
            observed = sum(n for levels, n in by_kind[kind] if levels[i] != NULL)
            if i in skip or not observed:
                continue
            w = matched * observed / sum(n for _, n in by_kind[kind])
            sums[c.field] = [a + w * b for a, b in zip(sums[c.field], m[c.field])]
            weights[c.field] += w
    return {c.field: ([x / weights[c.field] for x in sums[c.field]] if weights[c.field] > 0
                      else _start_m(len(c.levels))) for c in COMPARISONS}


def estimate_prior(patterns: Mapping[tuple[int, tuple[int, ...]], int], m: dict[str, list[float]],
                   u: dict[str, list[float]], records: int) -> float:
    """The chance two random records match, as the fixed point λ = E[matches] / all pairs
    (the candidate pairs hold nearly every match; the rest of all pairs hold ~none)."""
    all_pairs = max(records * (records - 1) / 2, 1.0)
    factors: Counter[float] = Counter()
    for (_kind, levels), count in patterns.items():
        bits = 0.0
        for i, lv in enumerate(levels):
            if lv != NULL:
                f = FIELDS[i]
                bits += math.log2(max(m[f][lv], _FLOOR) / max(u[f][lv], _FLOOR))
        factors[min(bits, 1000.0)] += count
    prior = min(max(1.0 / all_pairs, 1e-12), 0.5)
    for _ in range(100):
        odds = prior / (1 - prior)
        expected = sum(n / (1.0 + 2.0 ** -bits / odds) for bits, n in factors.items())
        new = min(max(expected / all_pairs, 1e-15), 0.5)
        if abs(new - prior) <= 1e-4 * prior:
            return new
        prior = new
    return prior


def estimate(records: Sequence[Features],
             patterns: Mapping[tuple[int, tuple[int, ...]], int], *,
             upper: float = 6.0, lower: float = 0.0, u_pairs: int = 200_000,
             rng: random.Random | None = None) -> LinkageModel:
    """A model learnt from ``records`` and their blocked candidate pairs' level patterns
    (keyed by the mask of blocking kinds the pair shares, see ``blocking.kind_mask``)."""
    u = estimate_u(records, pairs=u_pairs, rng=rng)
    m = estimate_m(patterns, u)
    prior = estimate_prior(patterns, m, u, len(records))
    model = LinkageModel(m=m, u=u, prior=prior, upper=upper, lower=lower, trained_on={
        "records": len(records), "candidate_pairs": sum(patterns.values()),
        "random_pairs": u_pairs, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    model.guards_on, evidence = learn_guards(patterns, model._bits)
    model.trained_on["guard_evidence"] = evidence
    return model
