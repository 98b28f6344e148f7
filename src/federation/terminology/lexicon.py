"""The diagnosis lexicon and its longest-match tokeniser.

The lexicon is data (``data/diagnosis-lexicon.json``): whole disease terms with their
synonyms and abbreviations, organ/bone sites that compose with a malignancy, morphology
or fracture word, and qualifier words (laterality, site type, acuity, certainty …).
Text is folded with NFKC (full-width → half-width, Ⅱ → II, ？ → ?) and ASCII case
folding before matching; the tokeniser then takes, at each position, the longest
lexicon term or pattern (stage, grade, TNM) that starts there. Characters no term covers
become ``unknown`` tokens, so nothing in the text is silently dropped.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from federation.errors import MappingError

__all__ = ["Lexicon", "Token", "fold", "load_lexicon", "tokenise"]

#: separators between phrases: whitespace and punctuation (after NFKC folding)
#: ("、" is not here: it is a list separator, "肝、骨转移")
_PUNCT = set(" \t\r\n,.;:!()[]{}<>\"'/\\|+-_=*#~`，。；：！（）【】《》“”‘’·")

#: patterns tried alongside lexicon terms (kind, compiled)
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("stage", re.compile(r"(?:[ctp]?t[0-4x][a-d]?n[0-3x][a-c]?m[01x][a-c]?)")),
    ("stage", re.compile(r"(?:iv|i{1,3}|[0-4]|[一二三四])[abc]?期|早期|晚期|中晚期|进展期|终末期")),
    ("grade", re.compile(r"(?:iii|ii|i|[1-3]|[一二三])级")),
)


def fold(text: str) -> str:
    """NFKC and ASCII case folding; keeps Chinese as written."""
    return unicodedata.normalize("NFKC", text).lower()


@dataclass(frozen=True, slots=True)
class Token:
    kind: str            # disease, site, subsite, malignant, fracture, morphology, laterality,
    #                      qualifier, met_after, met_before, conj, list_sep, ignorable, punct,
    #                      stage, grade, unknown
    text: str            # the folded surface form
    start: int
    end: int
    entry: dict[str, Any] | None = None


class Lexicon:
    """Term → (kind, entry) index over the JSON lexicon."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.terms: dict[str, tuple[str, dict[str, Any]]] = {}
        self.sites = {site["key"]: site for site in data["sites"]}
        self.morphologies = {m["key"]: m for m in data["morphology"]}
        for entry in data["diseases"]:
            self._add(entry["terms"], "disease", entry)
        for entry in data["sites"]:
            self._add(entry["terms"], "site", entry)
        for entry in data["subsites"]:
            self._add(entry["terms"], "subsite", entry)
        for entry in data["morphology"]:
            self._add(entry["terms"], "morphology", entry)
        for entry in data["laterality"]:
            self._add(entry["terms"], "laterality", entry)
        for entry in data["qualifiers"]:
            self._add(entry["terms"], "qualifier", entry)
        for kind in ("malignant", "fracture", "conjunctions", "list_separators", "ignorable",
                     "metastasis_after", "metastasis_before"):
            name = {"conjunctions": "conj", "list_separators": "list_sep",
                    "metastasis_after": "met_after", "metastasis_before": "met_before"}
            self._add(data[kind], name.get(kind, kind), {})
        self.max_len = max(len(term) for term in self.terms)

    def _add(self, terms: list[str], kind: str, entry: dict[str, Any]) -> None:
        for term in terms:
            key = fold(term)
            if key in self.terms and self.terms[key][0] != kind:
                raise MappingError(f"diagnosis lexicon term {term!r} is listed twice")
            self.terms.setdefault(key, (kind, entry))

    def site_of(self, key: str) -> dict[str, Any]:
        return self.sites[key]


@cache
def load_lexicon() -> Lexicon:
    """The packaged lexicon (read once; immutable by convention)."""
    raw = resources.files("federation.terminology.data").joinpath("diagnosis-lexicon.json")
    return Lexicon(json.loads(raw.read_text(encoding="utf-8")))


def _ascii_alpha(ch: str) -> bool:
    return "a" <= ch <= "z"


def _term_at(lexicon: Lexicon, text: str, i: int) -> tuple[int, str, dict[str, Any] | None]:
    """(length, kind, entry) of the longest term or pattern at ``i``; length 0 if none."""
    best: tuple[int, str, dict[str, Any] | None] = (0, "", None)
    for length in range(min(lexicon.max_len, len(text) - i), 0, -1):
        hit = lexicon.terms.get(text[i:i + length])
        if hit is None:
            continue
        word = text[i:i + length]
        # an ASCII abbreviation must stand alone: "ca" is not the start of "cap…"
        if _ascii_alpha(word[0]) and i > 0 and _ascii_alpha(text[i - 1]):
            continue
        if _ascii_alpha(word[-1]) and i + length < len(text) and _ascii_alpha(text[i + length]):
            continue
        best = (length, hit[0], hit[1])
        break
    for kind, pattern in _PATTERNS:
        found = pattern.match(text, i)
        if found and len(found.group()) > best[0]:
            best = (len(found.group()), kind, None)
    return best


def tokenise(text: str, lexicon: Lexicon | None = None) -> list[Token]:
    """Longest-match segmentation of already-folded ``text``; see the module docstring."""
    lexicon = lexicon or load_lexicon()
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _PUNCT or ch.isspace():
            tokens.append(Token("punct", ch, i, i + 1))
            i += 1
            continue
        length, kind, entry = _term_at(lexicon, text, i)
        if length:
            tokens.append(Token(kind, text[i:i + length], i, i + length, entry))
            i += length
            continue
        if tokens and tokens[-1].kind == "unknown" and tokens[-1].end == i:
            last = tokens.pop()
            tokens.append(Token("unknown", last.text + ch, last.start, i + 1))
        else:
            tokens.append(Token("unknown", ch, i, i + 1))
        i += 1
    return tokens
