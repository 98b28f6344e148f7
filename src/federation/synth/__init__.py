"""The synthetic consortium: six sites' source systems plus the truth of who is who.

Demo and test data for every part of the gateway — adapters, EMPI, archive — with the
noise real sites have (homophones, traditional characters, missing or 15-digit IDs,
reformatted phones) at documented rates (see :mod:`federation.synth.noise`).
"""

from __future__ import annotations

from federation.synth.generator import (
    SITES,
    ConsortiumManifest,
    ExtraSource,
    SiteSpec,
    generate_consortium,
    load_manifest,
)
from federation.synth.noise import NoiseRates

__all__ = [
    "SITES",
    "ConsortiumManifest",
    "ExtraSource",
    "NoiseRates",
    "SiteSpec",
    "generate_consortium",
    "load_manifest",
]
