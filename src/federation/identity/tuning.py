"""What a re-estimated model would change, measured against the current links.

Compared pairwise: a *link made* is a pair of records the new model would put in one
person that are apart now; a *link undone* the reverse. People's decisions (accepted
reviews, manual links, splits) are never changed by applying a model — the preview
counts how many of the model's proposals they would overrule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from federation.identity.bulk import link_features
from federation.identity.features import Features
from federation.identity.model import LinkageModel

__all__ = ["pair_agreement", "preview"]


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pair_agreement(current: Sequence[Hashable], proposed: Sequence[Hashable]) -> dict[str, int]:
    """Pairs together now, together under the proposal, and together in both."""
    both = sum(_pairs(n) for n in Counter(zip(current, proposed)).values())
    now = sum(_pairs(n) for n in Counter(current).values())
    new = sum(_pairs(n) for n in Counter(proposed).values())
    return {"pairs_linked_now": now, "pairs_linked_proposed": new,
            "links_made": new - both, "links_undone": now - both}


def preview(features: Sequence[Features], decisions: Mapping[tuple[str, str], str],
            model: LinkageModel) -> dict[str, int]:
    result = link_features(features, model=model)
    current = [decisions.get((f.site, f.record_id), f"new:{i}") for i, f in enumerate(features)]
    report = pair_agreement(current, result.person_of)
    report["review_pairs_proposed"] = len(result.review)
    report["records"] = len(features)
    return report
