"""A review item explained for a person: the two records side by side, field by field,
with the match weight each field gives and the total against the model's thresholds.

The Fellegi–Sunter weights (:mod:`federation.identity.model`) are recomputed with the
model in force now, from the records as the EMPI holds them now — what accepting would
act on — and the weight stored when the item was opened is given beside them. Values
are the EMPI's normalised features (simplified characters, pinyin, digits only), not
the sites' raw input. Pure: no I/O. The answer carries demographics: it is for the
regional administrator's screen, never for a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from federation.identity.compare import COMPARISONS, NULL
from federation.identity.features import Features
from federation.identity.model import LinkageModel

if TYPE_CHECKING:  # the store's frozen rows; no SQL here
    from federation.identity.store import ReviewPair, StoredRecord

__all__ = ["FIELD_VALUES", "compare_pair", "record_json", "review_item_json"]

#: what each compared field shows of a record
FIELD_VALUES: dict[str, tuple[str, ...]] = {
    "family": ("family", "family_py"),
    "given": ("given", "given_py"),
    "birth_date": ("birth_date",),
    "sex": ("sex",),
    "national_id": ("national_id",),
    "other_id": ("other_id",),
    "phone": ("phone",),
    "address": ("address",),
    "postcode": ("postcode",),
}


def _shown(f: Features, field: str) -> str | None:
    """The field's value as a reviewer reads it: '张 (zhang)', '1980-05-01' …"""
    data = f.as_json()
    main, *more = (data.get(k) for k in FIELD_VALUES[field])
    if main is None:
        main, more = (more[0] if more else None), []
    if main is None:
        return None
    extra = [str(m) for m in more if m and m != main]
    return f"{main} ({', '.join(extra)})" if extra else str(main)


def compare_pair(model: LinkageModel, a: Features, b: Features) -> dict[str, Any]:
    """Every compared field with both values, its agreement level and the bits of
    evidence it gives (0 when a side lacks it: no evidence either way); the prior, the
    total weight, the guards tripped, and what the model would decide."""
    score = model.score(a, b)
    bits = {c.field: c.bits for c in model.explain(score.levels)}
    fields = []
    for i, comparison in enumerate(COMPARISONS):
        level = score.levels[i]
        fields.append({
            "field": comparison.field, "a": _shown(a, comparison.field),
            "b": _shown(b, comparison.field),
            "level": None if level == NULL else level,
            "meaning": "missing on one side" if level == NULL else comparison.levels[level],
            "weight": round(bits.get(comparison.field, 0.0), 2) if level != NULL else 0.0,
        })
    return {"fields": fields, "prior_weight": round(model.prior_bits, 2),
            "total_weight": round(score.weight, 2),
            "probability": round(score.probability, 4), "guards": list(score.guards),
            "decision": model.decide(score),
            "thresholds": {"upper": model.upper, "lower": model.lower}}


def record_json(r: StoredRecord) -> dict[str, Any]:
    f = r.features.as_json()
    return {"site_id": r.ref.site_id, "record_id": r.ref.record_id, "local_id": r.local_id,
            "person_id": r.person_id, "state": r.state, "pinned": r.pinned,
            "values": {k: f.get(k) for k in ("name", "family", "given", "family_py",
                                               "given_py", "sex", "birth_date", "national_id",
                                               "other_id", "phone", "address", "postcode")},
            "problems": f.get("problems", [])}


def review_item_json(pair: ReviewPair) -> dict[str, Any]:
    """The whole answer of ``GET /api/identity/review/{id}`` but the persons."""
    item = pair.item
    return {
        "item": {"id": item.id, "status": item.status, "reason": item.reason,
                 "created_at": item.created_at.isoformat(),
                 "candidate_person_id": item.candidate_person_id,
                 "weight_at_review": item.weight,
                 "contributions_at_review": item.contributions},
        "records": [record_json(pair.record), record_json(pair.candidate)],
        "comparison": compare_pair(pair.model, pair.record.features, pair.candidate.features),
    }
