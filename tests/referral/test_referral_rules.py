"""The consortium's referral rules, read from data, against a naive oracle written from
the rules' prose (randomised registries), and the rules file's own checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import ConfigError, PermissionDenied
from federation.referral.rules import SiteFacts, load_rules

RULES = load_rules()
TIERS = ("township", "county", "city")


def oracle(direction: str, urgency: str, origin: SiteFacts, target: SiteFacts) -> bool:
    if origin.site_id == target.site_id:
        return False
    o, t = origin.tier, target.tier
    if direction == "upward":
        if o == "township":
            return target.site_id == origin.parent or (urgency == "emergency" and t == "city")
        return o == "county" and t == "city"
    if direction == "downward":
        if urgency == "emergency":
            return False
        if o == "city":
            return t in ("county", "township")
        return o == "county" and target.parent == origin.site_id
    if o == "township":
        return urgency != "emergency" and t == "township"
    return t in ("county", "city")


@st.composite
def registries(draw):
    n = draw(st.integers(2, 8))
    sites = []
    for i in range(n):
        tier = draw(st.sampled_from(TIERS))
        parents = [s.site_id for s in sites]
        parent = draw(st.sampled_from([None, *parents])) if parents else None
        sites.append(SiteFacts(f"s{i}", tier, parent))
    return sites


@settings(max_examples=300, deadline=None)
@given(registries(), st.sampled_from(("upward", "downward", "redirect")),
       st.sampled_from(RULES.urgencies), st.data())
def test_routes_agree_with_the_oracle(sites, direction, urgency, data):
    origin = data.draw(st.sampled_from(sites))
    target = data.draw(st.sampled_from(sites))
    expected = oracle(direction, urgency, origin, target)
    try:
        RULES.check_route(direction, urgency, origin, target)
        allowed = True
    except PermissionDenied as exc:
        allowed = False
        assert origin.site_id in exc.message
    assert allowed == expected
    assert (target.site_id in RULES.targets(direction, urgency, origin, sites)) == expected


def test_time_limits_and_reasons_come_from_the_file():
    limits = RULES.time_limits
    assert limits.limits["emergency"].acknowledge.total_seconds() == 30 * 60
    assert limits.limits["urgent"].acknowledge.total_seconds() == 4 * 3600
    assert set(limits.notify) == {"owner-site", "requester-site", "regional-admin"}
    assert "no-capacity" in RULES.reject_reasons


@pytest.mark.parametrize("edit,message", [
    (('direction = "upward"', 'direction = "sideways"'), "direction must be one of"),
    (('to = ["parent"]', 'to = ["nowhere"]'), "must be parent, child or tier"),
    (('acknowledge = "4h"', 'acknowledge = "soon"'), "must look like 30m"),
    (('notify = ["owner-site"', 'notify = ["the-press"'), "unknown audience"),
])
def test_a_bad_rules_file_names_its_mistake(tmp_path, edit, message):
    from importlib import resources

    text = resources.files("federation.referral").joinpath("consortium.toml").read_text()
    assert edit[0] in text
    path = tmp_path / "rules.toml"
    path.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_rules(path)


def test_departments_come_from_the_file(tmp_path):
    city, township = SiteFacts("city-1", "city", None), SiteFacts("t", "township", "c")
    assert "cardiology" in RULES.departments(city)
    assert RULES.departments(township) == ("general-practice", "chronic-disease",
                                           "rehabilitation")
    from importlib import resources

    text = resources.files("federation.referral").joinpath("consortium.toml").read_text()
    path = tmp_path / "rules.toml"
    path.write_text(text + '\n[departments.sites]\n"city-1" = ["oncology"]\n', encoding="utf-8")
    assert load_rules(path).departments(city) == ("oncology",)
    assert load_rules(path).departments(SiteFacts("city-2", "city", None)) == \
        RULES.departments(city)
    path.write_text(text.replace('township = ["general-practice"', 'moon = ["general-practice"'),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="departments.moon must be a tier"):
        load_rules(path)
    path.write_text(text.replace('township = ["general-practice"', 'township = [""'),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="departments.township must be a list"):
        load_rules(path)
