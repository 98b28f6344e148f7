"""The archive's search-parameter parser: every parameter, every prefix, strict refusal
of what it does not support, and property-based fuzzing (no input crashes it; a valid
query round-trips through its canonical form)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.archive.search_params import (
    DATE_PREFIXES,
    SEARCH_PARAMETERS,
    DateRange,
    Token,
    date_range,
    parse_search,
)
from federation.errors import InvalidInput

UTC = dt.UTC
CST = dt.timezone(dt.timedelta(hours=8))


def test_a_full_query_parses() -> None:
    q = parse_search("Observation", [
        ("patient", "Patient/p-1"), ("code", "http://loinc.org|2823-3,718-7"),
        ("code", "|X1"), ("category", "laboratory"), ("date", "ge2024-01"),
        ("date", "lt2024-02-15T10:00+08:00"), ("_sort", "-date"), ("_count", "10"),
        ("_offset", "20"), ("_format", "json")])
    assert q.patient == "p-1" and q.count == 10 and q.offset == 20 and q.sort_desc is True
    assert q.codes == ((Token("http://loinc.org", "2823-3"), Token(None, "718-7")),
                       (Token("", "X1"),))
    assert q.dates[0] == DateRange("ge", dt.datetime(2024, 1, 1, tzinfo=CST).astimezone(UTC),
                                   dt.datetime(2024, 2, 1, tzinfo=CST).astimezone(UTC),
                                   "2024-01")
    again = parse_search("Observation", q.canonical() + [("_offset", "20")])
    assert again == q


@pytest.mark.parametrize(("text", "start", "end"), [
    ("2024", dt.datetime(2024, 1, 1, tzinfo=CST), dt.datetime(2025, 1, 1, tzinfo=CST)),
    ("2024-12", dt.datetime(2024, 12, 1, tzinfo=CST), dt.datetime(2025, 1, 1, tzinfo=CST)),
    ("2024-02-28", dt.datetime(2024, 2, 28, tzinfo=CST), dt.datetime(2024, 2, 29, tzinfo=CST)),
    ("2024-02-28T10:30Z", dt.datetime(2024, 2, 28, 10, 30, tzinfo=UTC),
     dt.datetime(2024, 2, 28, 10, 31, tzinfo=UTC)),
    ("2024-02-28T10:30:05.5-05:00",
     dt.datetime(2024, 2, 28, 10, 30, 5, 500000, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
     dt.datetime(2024, 2, 28, 10, 30, 5, 500001, tzinfo=dt.timezone(dt.timedelta(hours=-5)))),
])
def test_date_precision_is_a_range(text, start, end) -> None:
    assert date_range(text) == (start, end)


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "24-01-01", "2024-01-01T25:00",
                                  "2024-01-01T10:00+15:00", "now", "", "9999"])
def test_bad_dates_are_none(text) -> None:
    assert date_range(text) is None


@pytest.mark.parametrize(("prefix", "inside", "outside"), [
    ("eq", (10, 11), (9, 11)), ("ne", (9, 11), (10, 11)), ("gt", (10, 21), (10, 20)),
    ("lt", (9, 11), (10, 11)), ("ge", (19, 21), (5, 10)), ("le", (19, 30), (20, 30)),
    ("sa", (20, 21), (19, 21)), ("eb", (5, 10), (5, 11)),
])
def test_each_prefix(prefix, inside, outside) -> None:
    day = dt.datetime(2024, 1, 1, tzinfo=UTC)
    param = DateRange(prefix, day + dt.timedelta(hours=10), day + dt.timedelta(hours=20))

    def rng(a, b):
        return day + dt.timedelta(hours=a), day + dt.timedelta(hours=b)
    assert param.matches(*rng(*inside)) and not param.matches(*rng(*outside))


@pytest.mark.parametrize(("params", "named"), [
    ([("patient", "p"), ("foo", "1"), ("bar", "2")], "'bar', 'foo'"),
    ([("patient", "p"), ("code:text", "x")], "code:text"),
    ([("patient", "p"), ("patient.name", "x")], "patient.name"),
    ([("patient", "p"), ("date", "ap2024")], "ap"),
    ([("patient", "p"), ("date", "ge")], "date"),
    ([("patient", "p"), ("_count", "1001")], "_count"),
    ([("patient", "p"), ("_count", "1"), ("_count", "2")], "_count"),
    ([("patient", "p"), ("subject", "q")], "either"),
    ([("patient", "p"), ("code", "a|b|c")], "one '|'"),
    ([("patient", "p"), ("code", "")], "empty"),
    ([("patient", "p"), ("code", "|")], "names no code"),
    ([("patient", "p"), ("_format", "xml")], "JSON"),
    ([("patient", "Patient/")], "patient"),
    ([("code", "x")], "needs 'patient'"),
    ([("patient", "p"), ("code", "x" * 300)], "longer"),
])
def test_refusals_name_the_problem(params, named) -> None:
    with pytest.raises(InvalidInput, match=named):
        parse_search("Observation", params)


def test_per_type_parameters() -> None:
    with pytest.raises(InvalidInput, match="'code'"):
        parse_search("Encounter", [("patient", "p"), ("code", "x")])
    with pytest.raises(InvalidInput, match="not supported"):
        parse_search("Practitioner", [("patient", "p")])
    for rtype, names in SEARCH_PARAMETERS.items():
        assert parse_search(rtype, [("patient", "p")]).resource_type == rtype
        assert "patient" in names


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_names = st.sampled_from(["patient", "subject", "code", "category", "date", "_count",
                          "_offset", "_sort", "_format", "foo", "code:text", ""]) | _text
_values = (_text | st.sampled_from(["Patient/p", "p", "http://loinc.org|2823-3", "|x", "x|",
                                    "ge2024-01-01", "lt2024", "2024-02-30", "eq2024-01-01T10:00Z",
                                    "' OR 1=1 --", "-date", "date", "10", "-1", "0"])
           | st.builds(lambda p, d: p + d, st.sampled_from(DATE_PREFIXES + ("ap", "xx", "")),
                       st.dates().map(str)))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(SEARCH_PARAMETERS) + ["Bogus"]),
       st.lists(st.tuples(_names, _values), max_size=8))
def test_fuzz_never_crashes(rtype, params) -> None:
    try:
        q = parse_search(rtype, params)
    except InvalidInput:
        return
    assert parse_search(rtype, q.canonical() + [("_offset", str(q.offset))]) == q
    for d in q.dates:
        assert d.start < d.end and d.start.tzinfo is not None
        d.matches(d.start, d.end)


@settings(max_examples=300, deadline=None)
@given(_text)
def test_fuzz_dates(text) -> None:
    found = date_range(text)
    assert found is None or found[0] < found[1]
