"""The consortium CA on disk: creation, issuing, the index and revocation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.errors import ConfigError, InvalidInput
from federation.security.ca import (
    GATEWAY_SERVER_NAME,
    CertificateAuthority,
    init_ca,
    node_server_name,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _crl(ca: CertificateAuthority) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(ca.crl_path.read_bytes())


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", consortium="Test Consortium")


# ---------------------------------------------------------------------------- init / load


def test_init_creates_the_ca_files_with_a_private_key(ca: CertificateAuthority) -> None:
    for name in ("ca.crt", "ca.key", "index.json", "crl.pem"):
        assert (ca.ca_dir / name).is_file(), name
    assert _mode(ca.ca_dir / "ca.key") == 0o600
    assert json.loads(ca.index_path.read_text())["issued"] == []
    crl = _crl(ca)
    assert len(crl) == 0
    assert crl.is_signature_valid(ca.certificate.public_key())


def test_ca_certificate_is_a_pathlen_0_signing_ca(ca: CertificateAuthority) -> None:
    cert = _cert(ca.cert_path)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Test Consortium")
    assert ca.consortium == "Test Consortium"
    assert ca.subject_cn == "Test Consortium CA"


def test_init_is_idempotent_and_never_overwrites(ca: CertificateAuthority) -> None:
    before = {n: (ca.ca_dir / n).read_bytes() for n in ("ca.crt", "ca.key", "crl.pem")}
    ca.issue_node("county-a", "county", ca.ca_dir.parent / "county-a")
    index = ca.index_path.read_bytes()
    again = init_ca(ca.ca_dir, consortium="A Different Name")
    assert again.fingerprint == ca.fingerprint
    assert again.consortium == "Test Consortium"
    assert {n: (ca.ca_dir / n).read_bytes() for n in before} == before
    assert ca.index_path.read_bytes() == index


def test_load_names_the_missing_file(tmp_path: Path, ca: CertificateAuthority) -> None:
    with pytest.raises(ConfigError, match=r"ca\.crt does not exist.*federation ca init"):
        CertificateAuthority.load(tmp_path / "nowhere")
    (ca.ca_dir / "ca.key").unlink()
    with pytest.raises(ConfigError, match=r"ca\.key does not exist"):
        CertificateAuthority.load(ca.ca_dir)


def test_load_refuses_a_key_from_another_ca(tmp_path: Path, ca: CertificateAuthority) -> None:
    other = init_ca(tmp_path / "other")
    (ca.ca_dir / "ca.key").write_bytes((other.ca_dir / "ca.key").read_bytes())
    with pytest.raises(ConfigError, match="is not the key of"):
        CertificateAuthority.load(ca.ca_dir)


# ---------------------------------------------------------------------------- issuing


def test_node_certificate_carries_its_identity(ca: CertificateAuthority, tmp_path: Path) -> None:
    out = tmp_path / "county-a"
    issued = ca.issue_node("county-a", "county", out, hosts=("localhost", "127.0.0.1", "10.0.0.7"))
    assert issued.cert_path == out / "county-a.crt" and issued.key_path == out / "county-a.key"
    assert _mode(issued.key_path) == 0o600
    assert (out / "ca.crt").read_bytes() == ca.cert_path.read_bytes()

    cert = _cert(issued.cert_path)
    san = _san(cert)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:federation:role:node", "urn:federation:site:county-a", "urn:federation:tier:county"]
    assert san.get_values_for_type(x509.DNSName) == [node_server_name("county-a"), "localhost"]
    assert node_server_name("county-a") == "county-a.nodes.federation.internal"
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.7")]
    assert cert.subject.rfc4514_string() == "O=Test Consortium,OU=node,CN=county-a"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.certificate)
    assert format(cert.serial_number, "x") == issued.serial


def test_gateway_and_operator_certificates(ca: CertificateAuthority, tmp_path: Path) -> None:
    gw = ca.issue_gateway(tmp_path / "gateway")
    gw_san = _san(_cert(gw.cert_path))
    assert gw_san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:federation:role:gateway"]
    assert GATEWAY_SERVER_NAME in gw_san.get_values_for_type(x509.DNSName)

    op = ca.issue_operator("demo-tour", tmp_path / "demo-tour")
    op_cert = _cert(op.cert_path)
    assert _san(op_cert).get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:federation:role:operator", "urn:federation:operator:demo-tour"]
    assert op_cert.subject.rfc4514_string() == "O=Test Consortium,OU=operator,CN=demo-tour"
    assert (op.site_id, op.tier, op.kind) == (None, None, "operator")


def test_file_names_follow_the_output_folder(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue_node("county-b", "township", tmp_path / "wrong-tier")
    assert issued.cert_path == tmp_path / "wrong-tier" / "wrong-tier.crt"
    assert issued.name == "county-b"


@pytest.mark.parametrize("tier", ["provincial", "County", "", "乡镇"])
def test_invalid_tier_is_refused(ca: CertificateAuthority, tmp_path: Path, tier: str) -> None:
    with pytest.raises(InvalidInput,
                       match=r"tier .* is not valid: use one of township, county, city"):
        ca.issue_node("county-a", tier, tmp_path / "x")
    assert ca.list_issued() == []
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "site_id", ["County-A", "a", "-county", "county_a", "county a", "x" * 64, "县医院", ""])
def test_invalid_site_id_is_refused(ca: CertificateAuthority, tmp_path: Path, site_id: str) -> None:
    with pytest.raises(InvalidInput, match=r"site id .* is not valid: use 2-63 lowercase"):
        ca.issue_node(site_id, "county", tmp_path / "x")
    assert ca.list_issued() == []


@pytest.mark.parametrize("site_id", ["ab", "county-a", "township-a1", "9z", "x" * 63])
def test_valid_site_ids_are_accepted(ca: CertificateAuthority, tmp_path: Path,
                                     site_id: str) -> None:
    assert ca.issue_node(site_id, "township", tmp_path / "n").site_id == site_id


def test_validity_overrides_mint_an_expired_certificate(ca: CertificateAuthority,
                                                        tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    issued = ca.issue_node("county-a", "county", tmp_path / "expired",
                           not_before=now - dt.timedelta(days=30),
                           not_after=now - dt.timedelta(days=1))
    cert = _cert(issued.cert_path)
    assert cert.not_valid_after_utc == now - dt.timedelta(days=1)
    assert cert.not_valid_before_utc == now - dt.timedelta(days=30)
    with pytest.raises(InvalidInput, match="before it starts"):
        ca.issue_node("county-a", "county", tmp_path / "bad", not_after=now - dt.timedelta(days=1))
    with pytest.raises(InvalidInput, match="timezone-aware"):
        ca.issue_node("county-a", "county", tmp_path / "bad", not_after=dt.datetime(2030, 1, 1))


def test_days_sets_the_lifetime_but_never_past_the_ca(tmp_path: Path) -> None:
    short_ca = init_ca(tmp_path / "ca", days=30)
    cert = _cert(short_ca.issue_node("county-a", "county", tmp_path / "n", days=397).cert_path)
    assert cert.not_valid_after_utc == short_ca.certificate.not_valid_after_utc
    cert = _cert(short_ca.issue_node("county-a", "county", tmp_path / "m", days=7).cert_path)
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=6) < lifetime <= dt.timedelta(days=7)


def test_index_records_every_issued_certificate(ca: CertificateAuthority, tmp_path: Path) -> None:
    node = ca.issue_node("county-a", "county", tmp_path / "county-a")
    gw = ca.issue_gateway(tmp_path / "gateway")
    raw = json.loads(ca.index_path.read_text())["issued"]
    assert [(e["serial"], e["kind"], e["name"], e["tier"]) for e in raw] == [
        (node.serial, "node", "county-a", "county"), (gw.serial, "gateway", "gateway", None)]
    assert raw[0]["not_after"] == node.not_after.isoformat()
    assert raw[0]["revoked_at"] is None and raw[0]["reason"] is None
    listed = ca.list_issued()
    assert [r.serial for r in listed] == [node.serial, gw.serial]
    assert listed[0].not_after == node.not_after


# ---------------------------------------------------------------------------- revocation


def _crl_serials(ca: CertificateAuthority) -> dict[str, x509.RevokedCertificate]:
    return {format(r.serial_number, "x"): r for r in _crl(ca)}


def test_revoke_by_serial_puts_it_on_the_signed_crl(ca: CertificateAuthority,
                                                    tmp_path: Path) -> None:
    a = ca.issue_node("county-a", "county", tmp_path / "a")
    b = ca.issue_node("county-b", "county", tmp_path / "b")
    number_before = _crl(ca).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    revoked = ca.revoke(a.serial.upper(), reason="key_compromise")
    assert [(r.serial, r.reason) for r in revoked] == [(a.serial, "key_compromise")]
    crl = _crl(ca)
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert crl.issuer == ca.certificate.subject
    entries = _crl_serials(ca)
    assert set(entries) == {a.serial}
    reason = entries[a.serial].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number_before
    crl_lifetime = crl.next_update_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=6) < crl_lifetime <= dt.timedelta(days=7)
    by_serial = {r.serial: r for r in ca.list_issued()}
    assert by_serial[a.serial].revoked_at is not None
    assert by_serial[b.serial].revoked_at is None


def test_revoke_by_site_revokes_all_its_certificates(ca: CertificateAuthority,
                                                     tmp_path: Path) -> None:
    first = ca.issue_node("county-a", "county", tmp_path / "a1")
    second = ca.issue_node("county-a", "county", tmp_path / "a2")
    other = ca.issue_node("county-b", "county", tmp_path / "b")
    revoked = ca.revoke(site_id="county-a")
    assert {r.serial for r in revoked} == {first.serial, second.serial}
    entries = _crl_serials(ca)
    assert set(entries) == {first.serial, second.serial}
    assert other.serial not in entries
    # RFC 5280 §5.3.1: 'unspecified' is expressed by leaving the reason extension out
    assert not list(entries[first.serial].extensions)


def test_revoking_again_keeps_the_first_date(ca: CertificateAuthority, tmp_path: Path) -> None:
    a = ca.issue_node("county-a", "county", tmp_path / "a")
    (first,) = ca.revoke(a.serial, reason="superseded")
    (again,) = ca.revoke(a.serial, reason="key_compromise")
    assert again.revoked_at == first.revoked_at and again.reason == "superseded"


def test_revoke_refuses_bad_arguments_and_reports_no_match(ca: CertificateAuthority,
                                                           tmp_path: Path) -> None:
    ca.issue_node("county-a", "county", tmp_path / "a")
    crl_before = ca.crl_path.read_bytes()
    assert ca.revoke("abcdef") == []
    assert ca.revoke(site_id="nowhere") == []
    assert ca.crl_path.read_bytes() == crl_before
    with pytest.raises(InvalidInput, match="exactly one"):
        ca.revoke()
    with pytest.raises(InvalidInput, match="exactly one"):
        ca.revoke("abcdef", site_id="county-a")
    with pytest.raises(InvalidInput, match="reason 'stolen' is not one of"):
        ca.revoke(site_id="county-a", reason="stolen")
    with pytest.raises(InvalidInput, match="not a hexadecimal number"):
        ca.revoke("not-hex")


def test_refresh_crl_re_signs_with_the_same_entries(ca: CertificateAuthority,
                                                    tmp_path: Path) -> None:
    a = ca.issue_node("county-a", "county", tmp_path / "a")
    ca.revoke(a.serial)
    before = _crl(ca).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    ca.refresh_crl()
    assert set(_crl_serials(ca)) == {a.serial}
    after = _crl(ca).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert after == before + 1


def test_person_certificates_name_user_site_and_staff_roles(tmp_path):
    from federation.security.identity import identity_from_pem

    authority = init_ca(tmp_path / "ca", consortium="Test")
    issued = authority.issue_person("dr-wang", "county-a", ["doctor", "specialist"],
                                    tmp_path / "dr-wang")
    who = identity_from_pem(issued.cert_path.read_bytes())
    assert (who.role, who.name, who.site_id, who.tier) == ("person", "dr-wang", "county-a", None)
    assert who.staff_roles == ("doctor", "specialist")
    assert who.describe() == "person dr-wang at county-a"
    assert (tmp_path / "dr-wang" / "ca.crt").exists()
    assert authority.list_issued()[-1].kind == "person"
    with pytest.raises(InvalidInput, match="staff role 'surgeon'"):
        authority.issue_person("dr-x", "county-a", ["surgeon"], tmp_path / "x")
    with pytest.raises(InvalidInput, match="at least one staff role"):
        authority.issue_person("dr-x", "county-a", [], tmp_path / "x")
    with pytest.raises(InvalidInput, match="site id"):
        authority.issue_person("dr-x", "County A", ["doctor"], tmp_path / "x")
