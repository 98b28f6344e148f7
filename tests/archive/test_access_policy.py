"""The access decision, consent rules, dedup, de-identification and critical limits —
the archive's pure cores, each rule and each refusal walked."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

import pytest

from federation.archive.access import ConsentRule, Reader, decide
from federation.archive.alerts import critical_finding, load_limits
from federation.archive.care import CareContext, CareRegistry, CareRelationships
from federation.archive.consent import parse_consent, rules_of
from federation.archive.dedup import content_digest, deduplicate, identity_keys
from federation.archive.deid import MAX_SHIFT_DAYS, Deidentifier
from federation.errors import InvalidInput
from tests.archive.conftest import NOW, WEI, encounter, lab, patient

SITES = {"city-1", "county-a", "county-b", "township-a1"}
HELD = {"city-1", "county-a", "township-a1"}


def doctor(site="county-a", **over) -> Reader:
    fields = dict(kind="user", id="dr.li", site_id=site, purpose="TREAT",
                  roles=frozenset({"doctor"}))
    return Reader(**(fields | over))


@pytest.mark.parametrize(("reader", "caring", "allowed", "words"), [
    (doctor(), {"county-a"}, True, "care-relationship"),
    (doctor(purpose=None), {"county-a"}, False, "purpose of use is required"),
    (doctor(purpose="HRESCH"), {"county-a"}, False, "does not permit"),
    (doctor(purpose="HCOMPL"), {"county-a"}, False, "does not permit"),
    (doctor(roles=frozenset({"auditor"})), {"county-a"}, False, "roles"),
    (doctor(purpose="ETREAT"), set(), False, "needs a reason"),
    (doctor(purpose="ETREAT", reason="  "), set(), False, "needs a reason"),
    (doctor(site="county-b"), {"county-a"}, False, "no care relationship"),
    (doctor(site="county-b", purpose="ETREAT", reason="抢救"), set(), True, "break-glass"),
    (doctor(purpose="COC"), {"county-a", "city-1"}, True, "care-relationship"),
    (Reader("node", "p-9@county-a", "county-a", "TREAT"), {"county-a"}, True, "care"),
    (Reader("node", "p-9@county-a", "county-a", None), {"county-a"}, False, "purpose"),
])
def test_decision_table(reader, caring, allowed, words) -> None:
    decision = decide(reader, HELD, caring, [])
    assert decision.allowed is allowed and words in decision.reason


def test_own_site_only_needs_no_relationship() -> None:
    assert decide(doctor(), {"county-a"}, set(), []).basis == "own-site"
    assert not decide(doctor(), set(), set(), []).allowed


def test_consent_rules_withhold_sites_and_categories_but_not_the_readers_own() -> None:
    rules = [ConsentRule("c1", frozenset({"city-1"})),
             ConsentRule("c2", categories=frozenset({"DocumentReference"})),
             ConsentRule("c3", frozenset({"township-a1"}), frozenset({"Observation"}))]
    d = decide(doctor(), HELD, {"county-a"}, rules)
    assert d.restricted
    assert not d.permits("city-1", "Observation") and not d.permits("city-1", "Patient")
    assert not d.permits("township-a1", "DocumentReference")
    assert not d.permits("township-a1", "Observation") and d.permits("township-a1", "Condition")
    assert d.permits("county-a", "DocumentReference")     # its own records
    glass = decide(doctor(site="county-b", purpose="ETREAT", reason="x"), HELD, set(), rules)
    assert glass.allowed and not glass.permits("city-1", "Encounter")


def _consent(**provision) -> dict:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/p"}, "provision": provision}


def test_consent_parsing() -> None:
    top = parse_consent(json.dumps(_consent(type="deny")).encode(), SITES)
    assert rules_of(top.body, SITES, consent_id="x") == [ConsentRule("x")]
    both = _consent(type="permit", provision=[{
        "type": "deny", "actor": [{"role": {"text": "custodian"},
                                   "reference": {"identifier": {
                                       "system": "urn:federation:site-id", "value": "city-1"}}}],
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}])
    parsed = parse_consent(json.dumps(both).encode(), SITES)
    assert parsed.patient_record == "p"
    assert rules_of(parsed.body, SITES, consent_id="y") == [
        ConsentRule("y", frozenset({"city-1"}), frozenset({"Observation"}))]
    assert rules_of(parsed.body | {"status": "inactive"}, SITES, consent_id="y") == []
    for body, words in [
            (b"not json", "not JSON"),
            (json.dumps(_consent(type="maybe")).encode(), "permit or deny"),
            (json.dumps(_consent(type="permit", provision=[{"type": "permit"}])).encode(),
             "must be deny"),
            (json.dumps(_consent(type="permit", provision=[{"type": "deny"}])).encode(),
             "names no site"),
            (json.dumps(_consent(type="deny", **{"class": [{"code": "Foo"}]})).encode(),
             "resource type"),
            (json.dumps(_consent(type="deny") | {"patient": {"display": "王伟"}}).encode(),
             "Consent.patient"),
            (json.dumps(_consent(type="deny") | {"scope": {"text": "x"}}).encode(),
             "patient-privacy"),
            (json.dumps(_consent(type="deny") | {"dateTime": "yesterday"}).encode(),
             "not valid FHIR")]:
        with pytest.raises(InvalidInput, match=words):
            parse_consent(body, SITES)


def test_care_relationships_are_pluggable() -> None:
    @dataclass
    class Referrals:
        open: dict[str, set[str]]

        def sites_caring_for(self, person_id: str) -> set[str]:
            return self.open.get(person_id, set())

    class Broken:
        def sites_caring_for(self, person_id: str) -> set[str]:
            raise RuntimeError("down")

    assert isinstance(Referrals({}), CareRelationships)
    ctx = CareContext(None, None, lambda p: [], 30)  # type: ignore[arg-type]
    registry = CareRegistry(ctx, care=[lambda c: Referrals({"P1": {"city-1"}}),
                                       lambda c: Broken()], episodes=[])
    assert registry.sites_caring_for("P1") == {"city-1"}      # a broken source denies only
    assert registry.sites_caring_for("P2") == set()
    d = decide(doctor(site="city-1"), HELD, registry.sites_caring_for("P1"), [])
    assert d.allowed and d.basis == "care-relationship"


def test_dedup_by_content_and_by_business_identifier() -> None:
    @dataclass
    class Item:
        site_id: str
        resource_type: str
        data: dict

        @property
        def keys(self) -> frozenset[str]:
            return identity_keys(self.resource_type, self.data)

    a = lab("city-1", "o1", "pc", "2823-3", 4.1, "mmol/L", NOW,
            code={"coding": [{"system": "http://loinc.org", "code": "2823-3"}]})
    b = lab("county-a", "o2", "pa", "2823-3", 4.1, "mmol/L", NOW,
            code={"coding": [{"system": "http://loinc.org", "code": "2823-3"}]})
    c = dict(b, id="o3", valueQuantity=dict(b["valueQuantity"], value=4.2))
    d = dict(c, id="o4", identifier=[{"system": "urn:dicom:uid", "value": "1.2.3"}])
    e = dict(a, id="o5", identifier=[{"system": "urn:dicom:uid", "value": "1.2.3"}],
             valueQuantity=dict(a["valueQuantity"], value=9))
    assert content_digest(a) == content_digest(b) != content_digest(c)
    items = [Item("city-1", "Observation", a), Item("county-a", "Observation", b),
             Item("county-a", "Observation", c), Item("county-a", "Observation", d),
             Item("city-1", "Observation", e), Item("city-1", "Patient", patient("city-1", "pc")),
             Item("county-a", "Patient", patient("county-a", "pc"))]
    kept, also = deduplicate(items)
    assert kept == [0, 2, 3, 5, 6]
    assert also == {0: ["county-a"], 3: ["city-1"]}


def test_deidentification() -> None:
    deid = Deidentifier(b"k" * 32)
    shift = deid.shift_days("P1")
    assert shift == deid.shift_days("P1") and 0 < abs(shift) <= MAX_SHIFT_DAYS
    assert len({deid.shift_days(f"P{i}") for i in range(50)}) > 20
    p = deid.resource("city-1", patient("city-1", "pc"), "P1", {"pc", "pa"})
    text = json.dumps(p, ensure_ascii=False)
    for secret in (WEI["name"], WEI["nid"], WEI["phone"], "石门镇", "pc", "L1"):
        assert secret not in text
    assert p["birthDate"] == (dt.date(1980, 5, 12) + dt.timedelta(days=shift)).isoformat()
    enc = encounter("county-a", "e1", "pa", dt.datetime(2024, 3, 1, 9, 30,
                                                        tzinfo=dt.timezone(dt.timedelta(hours=8))))
    out = deid.resource("county-a", enc, "P1", {"pc", "pa"})
    assert out["subject"]["reference"] == f"Patient/{p['id']}"
    assert out["period"]["start"] == (dt.date(2024, 3, 1) + dt.timedelta(days=shift)
                                      ).isoformat() + "T09:30:00+08:00"
    obs = lab("county-a", "o1", "pa", "2823-3", 4.1, "mmol/L", NOW, valueString="患者自述头晕")
    out = deid.resource("county-a", obs | {"note": [{"text": "王伟 13800138000"}]}, "P1", {"pa"})
    blob = json.dumps(out, ensure_ascii=False)
    assert "头晕" not in blob and "13800138000" not in blob and "检验" not in blob
    assert out["code"]["coding"][0]["code"] == "2823-3"
    assert not re.search(r"-id\b|identifier", blob)       # site codes stay, identifiers go
    with pytest.raises(ValueError):
        Deidentifier(b"short")


@pytest.mark.parametrize(("loinc", "value", "unit", "extra", "direction"), [
    ("2823-3", 6.8, "mmol/L", {}, "high"),
    ("2823-3", 2.5, "mmol/L", {}, "low"),
    ("2823-3", 5.0, "mmol/L", {}, None),
    ("2823-3", 6.8, "mg/dL", {}, None),                       # another unit: never alerts
    ("2823-3", 2.5, "mmol/L", {"comparator": ">"}, None),      # ">2.5" is not critical-low
    ("718-7", 45, "g/L", {}, "low"),
    ("10839-9", 2.3, "ng/mL", {}, "high"),
    ("2951-2", 118, "mmol/L", {}, "low"),
    ("2345-7", 30.1, "mmol/L", {}, "high"),
    ("6301-6", 6.1, "", {}, "high"),
    ("9999-9", 1000, "mmol/L", {}, None),
])
def test_critical_limits(loinc, value, unit, extra, direction) -> None:
    obs = lab("city-1", "o1", "pc", loinc, value, unit, NOW)
    obs["valueQuantity"] = {"value": value, **({"unit": unit, "code": unit} if unit else {}),
                            **extra}
    finding = critical_finding(obs)
    assert (finding.direction if finding else None) == direction
    assert critical_finding(dict(obs, status="entered-in-error")) is None
    assert critical_finding(dict(obs, category=[])) is None


def test_limits_are_data() -> None:
    limits = load_limits()
    assert {"2823-3", "2345-7", "718-7", "10839-9", "6301-6", "2951-2"} <= set(limits)
    assert all(lim.low is not None or lim.high is not None for lim in limits.values())
