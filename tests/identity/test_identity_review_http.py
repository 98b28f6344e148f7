"""The EMPI review queue on the gateway's JSON API: the queue, a pair side by side with
each field's weight, accept / reject / split — on the identity store's own operations,
each call one exchange-log row without demographics. Store reads on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from pg_util import throwaway_database

from federation.archive.read import patient_ref
from federation.errors import NotFound
from federation.identity.index import RecordRef
from federation.identity.review import compare_pair
from federation.identity.store import IdentityStore
from federation.security.privacy import FieldCipher, create_keyring
from federation.store import GatewayStore, make_engine, upgrade
from federation.synth.people import resident_id
from tests.conftest import admin_token, bearer, staff_token

BORN = dt.date(1968, 4, 12)
WEI_ID = resident_id("532323", BORN, "male", 17)


def wei(**over: object) -> dict[str, object]:
    base = {"name": "张伟", "sex": "male", "birth_date": "1968-04-12", "national_id": WEI_ID,
            "phone": "13812345678", "address": "青岚市东阳县石门镇上坪村12号"}
    return {**base, **over}


NAMESAKE = wei(national_id=None, phone="13900001111", address="青岚市城关区人民路88号")


def _namesakes(empi: IdentityStore) -> tuple[str, int]:
    """Two 张伟 born the same day at two sites, nothing else shared: one review item."""
    first = empi.link("county-a", "n1", wei(national_id=None))
    empi.link("city-1", "n2", NAMESAKE)
    [item] = empi.review_queue()
    return str(first.person_id), item.id


# ------------------------------------------------------------------ the store, both backends


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def empi(request: pytest.FixtureRequest, tmp_path) -> Iterator[IdentityStore]:
    """The EMPI with IDs and phones encrypted at rest (the pair is shown decrypted)."""
    def make(url: str) -> Iterator[IdentityStore]:
        upgrade(url)
        engine = make_engine(url)
        store = GatewayStore(engine)
        for site, tier in (("city-1", "city"), ("county-a", "county"), ("county-b", "county")):
            store.upsert_site(site, site, tier)
        create_keyring(tmp_path / "keys.json")
        yield IdentityStore(engine, cipher=FieldCipher(tmp_path / "keys.json"))
        engine.dispose()

    if request.param == "sqlite":
        yield from make(f"sqlite:///{tmp_path / 'gateway.db'}")
        return
    with throwaway_database() as url:
        yield from make(url)


def test_the_pair_side_by_side_with_each_fields_weight(empi: IdentityStore) -> None:
    _, item_id = _namesakes(empi)
    pair = empi.review_pair(item_id)
    assert (pair.record.ref, pair.candidate.ref) == (RecordRef("city-1", "n2"),
                                                     RecordRef("county-a", "n1"))
    assert pair.candidate.features.phone == "13812345678"          # decrypted for the reviewer
    body = compare_pair(pair.model, pair.record.features, pair.candidate.features)
    fields = {f["field"]: f for f in body["fields"]}
    assert list(fields) == ["family", "given", "birth_date", "sex", "national_id", "other_id",
                            "phone", "address", "postcode"]
    assert (fields["family"]["a"], fields["family"]["b"]) == ("张 (zhang)", "张 (zhang)")
    assert fields["birth_date"]["meaning"] == "same day" and fields["birth_date"]["weight"] > 0
    assert (fields["phone"]["a"], fields["phone"]["b"]) == ("13900001111", "13812345678")
    assert fields["phone"]["meaning"] == "different" and fields["phone"]["weight"] < 0
    assert fields["national_id"] == {"field": "national_id", "a": None, "b": None,
                                     "level": None, "meaning": "missing on one side",
                                     "weight": 0.0}
    total = body["prior_weight"] + sum(f["weight"] for f in body["fields"])
    assert body["total_weight"] == pytest.approx(total, abs=0.05)
    assert body["total_weight"] == pytest.approx(pair.item.weight, abs=0.01)
    assert body["decision"] == "review" and "uncorroborated" in body["guards"]
    assert body["thresholds"] == {"upper": pair.model.upper, "lower": pair.model.lower}
    with pytest.raises(NotFound):
        empi.review_pair(item_id + 100)


def test_the_queue_pages_and_counts(empi: IdentityStore) -> None:
    for n, name in enumerate(("张伟", "李强", "王磊")):
        empi.link("county-a", f"a{n}", wei(name=name, national_id=None,
                                           birth_date=f"197{n}-01-01", phone=f"1381234000{n}",
                                           address=f"石门镇上坪村{n}号"))
        empi.link("city-1", f"b{n}", wei(name=name, national_id=None,
                                         birth_date=f"197{n}-01-01", phone=f"1390000111{n}",
                                         address=f"城关区人民路8{n}号"))
    everything = empi.review_queue()
    assert empi.review_count() == len(everything) == 3
    assert empi.review_queue(offset=1, limit=1) == everything[1:2]


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
async def http(gateway):
    token = await asyncio.to_thread(admin_token, gateway, user="admin.chen")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 timeout=20, headers=bearer(token)) as client:
        yield client


def _rows(gateway, prefix: str = "Identity/") -> list:
    return [e for e in gateway.store.list_exchanges(limit=1000)
            if e.operation.startswith(prefix)]


async def test_review_accept_joins_the_person_and_leaves_the_queue(gateway, http) -> None:
    first, item_id = await asyncio.to_thread(_namesakes, gateway.identity)
    queue = (await http.get("/api/identity/review")).json()
    assert queue["total"] == 1 and queue["items"][0]["id"] == item_id
    assert queue["items"][0]["record"] == {"site_id": "city-1", "record_id": "n2"}
    detail = (await http.get(f"/api/identity/review/{item_id}")).json()
    assert [r["values"]["name"] for r in detail["records"]] == ["张伟", "张伟"]
    assert detail["records"][0]["values"]["phone"] == "13900001111"
    assert {p["person_id"] for p in detail["persons"]} >= {first}
    assert detail["comparison"]["thresholds"]["upper"] > detail["comparison"]["total_weight"]
    accepted = await http.post(f"/api/identity/review/{item_id}/accept")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"item_id": item_id, "status": "accepted", "person_id": first,
                               "record": {"site_id": "city-1", "record_id": "n2"}}
    assert await asyncio.to_thread(gateway.identity.person_of,
                                   RecordRef("city-1", "n2")) == first
    assert (await http.get("/api/identity/review")).json() == {
        "total": 0, "offset": 0, "count": 20, "items": []}
    again = await http.post(f"/api/identity/review/{item_id}/accept")
    assert again.status_code == 409 and "already accepted" in again.json()["issue"][0][
        "diagnostics"]
    # history kept, with the administrator as the actor
    view = await asyncio.to_thread(gateway.identity.person, first)
    assert any(h["action"] == "review-accept" and h["actor"] == "consortium/admin.chen"
               for h in view.history)
    # each call one row: the record's hash, never a name, phone or ID
    rows = await asyncio.to_thread(_rows, gateway)
    assert [(r.operation, r.outcome) for r in rows] == [
        ("Identity/ReviewAccept", "error"), ("Identity/GetReviewQueue", "ok"),
        ("Identity/ReviewAccept", "ok"), ("Identity/GetReviewItem", "ok"),
        ("Identity/GetReviewQueue", "ok")]
    assert {r.patient_ref for r in rows if r.operation != "Identity/GetReviewQueue"} == {
        patient_ref("city-1", "n2")}
    for r in rows:
        assert not any(v in r.detail for v in ("张伟", "13900001111", "13812345678"))


async def test_reject_is_remembered_and_split_makes_a_new_person(gateway, http) -> None:
    first, item_id = await asyncio.to_thread(_namesakes, gateway.identity)
    second = await asyncio.to_thread(gateway.identity.person_of, RecordRef("city-1", "n2"))
    rejected = await http.post(f"/api/identity/review/{item_id}/reject")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert (await http.post(f"/api/identity/review/{item_id}/accept")).status_code == 409
    assert await asyncio.to_thread(gateway.identity.person_of,
                                   RecordRef("city-1", "n2")) == second != first
    # the decision stands: a later, stronger copy of the record is not linked to the first
    again = await asyncio.to_thread(gateway.identity.link, "city-1", "n2",
                                    wei(national_id=None, address="青岚市城关区人民路88号"))
    assert again.person_id != first
    # split: two records of one person, one split out to a new person
    await asyncio.to_thread(gateway.identity.link, "county-a", "s1", wei(name="李娜",
                            national_id=resident_id("532323", BORN, "female", 18),
                            sex="female", phone="13711112222"))
    await asyncio.to_thread(gateway.identity.link, "county-b", "s2", wei(name="李娜",
                            national_id=resident_id("532323", BORN, "female", 18),
                            sex="female", phone="13711112222"))
    before = await asyncio.to_thread(gateway.identity.person_of, RecordRef("county-b", "s2"))
    split = await http.post("/api/identity/records/county-b/s2/split")
    assert split.status_code == 200, split.text
    body = split.json()
    assert body["previous_person_id"] == before and body["person_id"] != before
    assert await asyncio.to_thread(gateway.identity.person_of,
                                   RecordRef("county-b", "s2")) == body["person_id"]
    alone = await http.post("/api/identity/records/county-b/s2/split")
    assert alone.status_code == 409 and "only record" in alone.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/identity/review/999", 404),
    ("POST", "/api/identity/review/999/accept", 404),
    ("POST", "/api/identity/review/999/reject", 404),
    ("GET", "/api/identity/review/abc", 400),
    ("POST", "/api/identity/review/-3/accept", 400),
    ("GET", "/api/identity/review?_count=1000", 400),
    ("GET", "/api/identity/review?status=open", 400),
    ("POST", "/api/identity/records/county-a/nobody/split", 404),
])
async def test_errors_are_clear_operation_outcomes(http, method, path, status) -> None:
    answer = await http.request(method, path)
    assert answer.status_code == status, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_only_the_regional_administrator_decides(gateway, pki) -> None:
    auditor = await asyncio.to_thread(admin_token, gateway, user="auditor.sun",
                                      roles=("auditor",), purpose="HCOMPL")
    doctor = await asyncio.to_thread(staff_token, gateway, pki)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 timeout=10) as client:
        for token in (auditor, doctor):
            for method, path in (("GET", "/api/identity/review"),
                                 ("GET", "/api/identity/review/1"),
                                 ("POST", "/api/identity/review/1/accept"),
                                 ("POST", "/api/identity/records/county-a/x/split")):
                answer = await client.request(method, path, headers=bearer(token))
                assert answer.status_code == 403, (method, path)
