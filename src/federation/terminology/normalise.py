"""Free-text Chinese diagnosis → a coded diagnosis that keeps the detail.

``"左侧中央型肺鳞癌并纵膈淋巴结转移"`` becomes ICD-10 C34.9 (lung cancer) with laterality
left, site type central, morphology squamous cell carcinoma (ICD-O-3 8070/3) and a
metastasis to the mediastinal lymph nodes. Rules, not statistics:

1. fold and tokenise with the lexicon (:mod:`federation.terminology.lexicon`);
2. metastasis: each ``转移``-type marker claims the sites written just before it (or, for
   ``转移至``, just after it) — those sites are metastases, never the primary;
3. the primary disease is a whole lexicon term (高血压, T2DM, 慢阻肺 …) or a composition
   site + malignancy/morphology word (肺 + 鳞癌 → C34) or site + 骨折 (股骨颈 + 骨折 → S72.0);
4. **never guess**: if a word the lexicon does not know touches the disease inside the same
   phrase (no punctuation or 并/伴 between them), the text is *unrecognised* — "高血压性心脏病"
   is not I10, "新生儿肺炎" is not J18.9. Unknown words in another phrase leave the
   diagnosis coded but ``partial``, with the words kept in ``unparsed``.

The original text is always kept. Offsets refer to the NFKC-folded text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from federation.terminology.lexicon import Lexicon, Token, fold, load_lexicon, tokenise

__all__ = ["BodySite", "Morphology", "NormalisedDiagnosis", "normalise_diagnosis"]

_SEPARATORS = frozenset({"punct", "conj", "list_sep"})


@dataclass(frozen=True, slots=True)
class BodySite:
    key: str                              # lexicon key, e.g. "mediastinal-lymph-node"
    display: str                          # Chinese display, e.g. "纵隔淋巴结"
    snomed: tuple[str, str] | None        # (SNOMED CT code, display) when known


@dataclass(frozen=True, slots=True)
class Morphology:
    key: str
    display: str
    icdo: str                             # ICD-O-3 morphology code, e.g. "8070/3"


@dataclass(frozen=True, slots=True)
class NormalisedDiagnosis:
    """What the normaliser made of one free-text diagnosis."""

    text: str                                       # the original text, as given
    code: str | None = None                         # ICD-10 (GB/T 14396) code
    display: str | None = None
    status: str = "unrecognised"                    # complete | partial | unrecognised
    site: BodySite | None = None                    # primary body site
    laterality: str | None = None                   # left | right | bilateral
    subsite: str | None = None                      # e.g. "upper-lobe"
    site_type: str | None = None                    # central | peripheral
    morphology: Morphology | None = None
    metastasis_sites: tuple[BodySite, ...] = ()
    acuity: str | None = None                       # acute | chronic | acute-exacerbation
    certainty: str | None = None                    # provisional | differential
    stage: str | None = None                        # as written: "iv期", "晚期", "t2n2m0"
    grade: str | None = None                        # as written: "3级"
    risk: str | None = None                         # very-high | high | medium | low
    other_qualifiers: tuple[str, ...] = ()          # primary, multiple, post-operative …
    other_diseases: tuple[tuple[str, str], ...] = ()   # further (code, display) found
    unparsed: tuple[str, ...] = field(default_factory=tuple)

    @property
    def recognised(self) -> bool:
        return self.code is not None


def _phrase_ids(tokens: list[Token]) -> list[int]:
    """Phrase number of each token; separators start a new phrase."""
    ids, current = [], 0
    for token in tokens:
        if token.kind in _SEPARATORS:
            current += 1
        ids.append(current)
    return ids


def _claim_metastases(tokens: list[Token], used: set[int]) -> list[int]:
    """Indexes of the site tokens that are metastases; markers themselves are ``used``."""
    sites: list[int] = []
    passable = {"site", "list_sep", "laterality", "qualifier", "ignorable"}
    for i, token in enumerate(tokens):
        if token.kind == "met_after":
            used.add(i)
            j = i - 1
            while j >= 0 and tokens[j].kind in passable and j not in used:
                if tokens[j].kind == "qualifier" and tokens[j].entry["kind"] != "multiple":
                    break
                if tokens[j].kind == "site":
                    sites.append(j)
                used.add(j)
                j -= 1
        elif token.kind == "met_before":
            used.add(i)
            j = i + 1
            while j < len(tokens) and (tokens[j].kind in passable or tokens[j].kind == "punct"):
                if tokens[j].kind == "site":
                    sites.append(j)
                used.add(j)
                j += 1
    return sorted(sites)


def _site(lexicon: Lexicon, key: str, laterality: str | None = None) -> BodySite:
    entry = lexicon.site_of(key)
    snomed = entry.get(laterality or "") or entry.get("snomed")
    return BodySite(key, entry["display"], tuple(snomed) if snomed else None)


def _find_primary(tokens: list[Token], used: set[int], lexicon: Lexicon):
    """[(token index, code, display, site key)] of every disease found, in text order."""
    found: list[tuple[int, str, str, str | None]] = []
    pending_site: int | None = None
    for i, token in enumerate(tokens):
        if i in used:
            continue
        if token.kind == "disease":
            entry = token.entry
            found.append((i, entry["code"], entry["display"], entry.get("site")))
        elif token.kind == "site":
            pending_site = i
        elif token.kind in ("malignant", "morphology", "fracture"):
            implied = token.entry.get("implies_site") if token.kind == "morphology" else None
            if pending_site is not None:
                entry = tokens[pending_site].entry
                coded = entry.get("fracture" if token.kind == "fracture" else "cancer")
                if coded:
                    found.append((pending_site, coded[0], coded[1], entry["key"]))
                    used.update({pending_site, i})
                    pending_site = None
                    continue
            if implied:
                coded = lexicon.site_of(implied)["cancer"]
                found.append((i, coded[0], coded[1], implied))
                used.add(i)
    # one disease per token: a composition may have claimed a site twice
    unique: dict[int, tuple[int, str, str, str | None]] = {}
    for item in found:
        unique.setdefault(item[0], item)
    return sorted(unique.values())


def normalise_diagnosis(text: str, lexicon: Lexicon | None = None) -> NormalisedDiagnosis:
    """Normalise one free-text diagnosis; never raises for any ``str``."""
    lexicon = lexicon or load_lexicon()
    tokens = tokenise(fold(text), lexicon)
    phrases = _phrase_ids(tokens)
    used: set[int] = set()
    met_idx = _claim_metastases(tokens, used)
    diseases = _find_primary(tokens, used, lexicon)

    laterality = site_type = subsite = acuity = certainty = stage = grade = risk = None
    morphology: Morphology | None = None
    others: list[str] = []
    subsite_entry = None
    for i, token in enumerate(tokens):
        if i in used and token.kind != "morphology":
            continue
        kind, entry = token.kind, token.entry or {}
        if kind == "laterality" and laterality is None:
            laterality = entry["key"]
        elif kind == "subsite" and subsite is None:
            subsite, subsite_entry = entry["key"], entry
        elif kind == "morphology" and morphology is None:
            morph = lexicon.morphologies[entry["key"]]
            morphology = Morphology(morph["key"], morph["display"], morph["icdo"])
        elif kind == "disease" and entry.get("morphology") and morphology is None:
            morph = lexicon.morphologies[entry["morphology"]]
            morphology = Morphology(morph["key"], morph["display"], morph["icdo"])
        elif kind == "qualifier":
            q_kind, code = entry["kind"], entry["code"]
            if q_kind == "site-type":
                site_type = site_type or code
            elif q_kind == "acuity":
                acuity = acuity or code
            elif q_kind == "certainty":
                certainty = certainty or code
            elif q_kind == "risk":
                risk = risk or code
            elif code not in others:
                others.append(code)
        elif kind == "stage":
            stage = stage or token.text
        elif kind == "grade":
            grade = grade or token.text
        else:
            continue
        used.add(i)
    for i in met_idx:
        used.add(i)
    metastases = tuple(dict.fromkeys(_site(lexicon, tokens[i].entry["key"]) for i in met_idx))
    if any(t.kind == "met_after" for t in tokens) and not metastases:
        metastases = (BodySite("site-unspecified", "未特指部位", None),)

    used.update(i for i, _c, _d, _s in diseases)
    for i, token in enumerate(tokens):
        if token.kind in ("punct", "conj", "list_sep", "ignorable"):
            used.add(i)
    leftovers = [i for i in range(len(tokens)) if i not in used]
    unparsed = tuple(tokens[i].text for i in leftovers)

    base = NormalisedDiagnosis(text=text, laterality=laterality, site_type=site_type,
                               subsite=subsite, morphology=morphology,
                               metastasis_sites=metastases, acuity=acuity,
                               certainty=certainty, stage=stage, grade=grade, risk=risk,
                               other_qualifiers=tuple(others), unparsed=unparsed)
    if not diseases:
        return base
    first_idx, code, display, site_key = diseases[0]
    primary_phrase = phrases[first_idx]
    if any(tokens[i].kind == "unknown" and phrases[i] == primary_phrase for i in leftovers):
        return base          # an unknown word inside the diagnosis phrase: never guess
    if subsite_entry and subsite_entry["site"] == site_key and code.startswith("C"):
        code, display = subsite_entry["cancer"]
    return NormalisedDiagnosis(
        text=text, code=code, display=display,
        status="complete" if not unparsed and len(diseases) == 1 else "partial",
        site=_site(lexicon, site_key, laterality) if site_key else None,
        laterality=laterality, subsite=subsite, site_type=site_type, morphology=morphology,
        metastasis_sites=metastases, acuity=acuity, certainty=certainty, stage=stage,
        grade=grade, risk=risk, other_qualifiers=tuple(others),
        other_diseases=tuple((c, d) for _i, c, d, _s in diseases[1:]), unparsed=unparsed)
