"""Report signatures: a specialist's person certificate from the consortium CA signs the
canonical JSON; anything else — a key the CA did not certify, a doctor's or a node's
certificate, one altered byte, a Provenance for another report — is refused, and a
superseded version still verifies."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.consult.report import (
    canonical,
    diagnostic_report,
    mark_superseded,
    provenance,
    sign_report,
    verify_bundle,
    verify_report,
)
from federation.errors import IntegrityError
from federation.referral.fhir import bundle, validated
from federation.security.signing import Signer
from tests.conftest import Pki

# within the validity of the certificates the fixtures issue during the run
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
SUBJECT = {"reference": "Patient/p-1", "type": "Patient"}


@pytest.fixture(scope="module")
def people(pki: Pki) -> dict[str, Signer]:
    out = {}
    for user, site, roles, ca in (("sig-li", "city-1", ["specialist"], pki.ca),
                                  ("sig-zhou", "city-1", ["doctor"], pki.ca)):
        folder = pki.root / user
        if not (folder / f"{user}.crt").exists():
            ca.issue_person(user, site, roles, folder)
        out[user] = Signer((folder / f"{user}.crt").read_bytes(),
                           (folder / f"{user}.key").read_bytes())
    foreign = pki.root / "foreign"                       # another consortium's CA
    out["foreign"] = Signer((foreign / "foreign.crt").read_bytes(),
                            (foreign / "foreign.key").read_bytes())
    node = pki.tls("city-1")
    out["node"] = Signer(node.cert.read_bytes(), node.key.read_bytes())
    return out


def _report(user: str = "sig-li", version: int = 1) -> dict:
    return diagnostic_report("con-1", version, kind="ecg", conclusion="窦性心律，ST段抬高",
                             codes=[{"system": "http://snomed.info/sct", "code": "164865005",
                                     "display": "ST elevation"}],
                             author_site="city-1", author_user=user, subject=SUBJECT,
                             issued=NOW, replaces="con-1-r1" if version > 1 else None)


def test_a_specialists_signed_report_verifies(pki: Pki, people) -> None:
    signed = sign_report(_report(), people["sig-li"])
    prov = provenance(signed, when=NOW, site_id="city-1", user_id="sig-li")
    validated(signed.report)
    validated(prov)
    signer = verify_report(signed.report, prov, pki.ca.ca_pem)
    assert (signer.name, signer.site_id, signer.staff_roles) == ("sig-li", "city-1",
                                                                 ("specialist",))
    assert verify_bundle(bundle("b", [signed.report, prov], NOW), pki.ca.ca_pem)[0][0] == "con-1-r1"


def test_a_key_the_ca_did_not_certify_is_rejected(pki: Pki, people) -> None:
    signed = sign_report(_report(), people["foreign"])
    prov = provenance(signed, when=NOW, site_id="city-1", user_id="sig-li")
    with pytest.raises(IntegrityError, match="CA did not issue"):
        verify_report(signed.report, prov, pki.ca.ca_pem)


@pytest.mark.parametrize(("signer", "message"), [("node", "node certificate"),
                                                 ("sig-zhou", "not certified as a specialist")])
def test_only_a_specialists_person_certificate_signs(pki: Pki, people, signer: str,
                                                     message: str) -> None:
    signed = sign_report(_report("sig-zhou" if signer == "sig-zhou" else "sig-li"),
                         people[signer])
    prov = provenance(signed, when=NOW, site_id="city-1", user_id="x")
    with pytest.raises(IntegrityError, match=message):
        verify_report(signed.report, prov, pki.ca.ca_pem)


def test_an_altered_report_or_another_author_is_rejected(pki: Pki, people) -> None:
    signed = sign_report(_report(), people["sig-li"])
    prov = provenance(signed, when=NOW, site_id="city-1", user_id="sig-li")
    altered = signed.report | {"conclusion": "正常心电图"}
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_report(altered, prov, pki.ca.ca_pem)
    other = sign_report(_report("sig-wu"), people["sig-li"])
    with pytest.raises(IntegrityError, match="names sig-wu as its author"):
        verify_report(other.report, provenance(other, when=NOW, site_id="city-1",
                                               user_id="sig-li"), pki.ca.ca_pem)
    r2 = _report(version=2)
    with pytest.raises(IntegrityError, match="signature is for DiagnosticReport/con-1-r1"):
        verify_report(r2, prov, pki.ca.ca_pem)
    with pytest.raises(IntegrityError, match="carries no signature"):
        verify_bundle(bundle("b", [signed.report], NOW), pki.ca.ca_pem)


def test_a_superseded_version_is_marked_outside_the_signature(pki: Pki, people) -> None:
    signed = sign_report(_report(), people["sig-li"])
    prov = provenance(signed, when=NOW, site_id="city-1", user_id="sig-li")
    old = mark_superseded(signed.report, "con-1-r2", NOW)
    assert old["meta"]["tag"][0]["code"] == "superseded"
    assert canonical(old) == canonical(signed.report)
    verify_report(old, prov, pki.ca.ca_pem)
    amended = sign_report(_report(version=2), people["sig-li"])
    prov2 = provenance(amended, when=NOW, site_id="city-1", user_id="sig-li",
                       replaces="con-1-r1")
    assert amended.report["status"] == "amended"
    assert prov2["entity"][0] == {"role": "revision",
                                  "what": {"reference": "DiagnosticReport/con-1-r1"}}
    assert len(verify_bundle(bundle("b", [amended.report, prov2, old, prov], NOW),
                             pki.ca.ca_pem)) == 2
