"""Reading identities from certificates, and following the consortium CRL."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from federation.errors import AuthenticationError, CertificateRevoked, ConfigError
from federation.security.ca import CertificateAuthority, init_ca
from federation.security.identity import (
    PeerIdentity,
    RevocationList,
    identity_from_pem,
    normalize_serial,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", consortium="Test Consortium")


def _self_signed(cn: str, uris: list[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    if uris:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------------------- identity


def test_node_certificate_parses_back_to_its_identity(ca: CertificateAuthority,
                                                      tmp_path: Path) -> None:
    issued = ca.issue_node("township-a1", "township", tmp_path / "n")
    pem = issued.cert_path.read_bytes()
    identity = identity_from_pem(pem)
    cert = x509.load_pem_x509_certificate(pem)
    assert identity == PeerIdentity(
        role="node", name="township-a1", site_id="township-a1", tier="township",
        serial=issued.serial, fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_after=cert.not_valid_after_utc)
    assert identity.not_after.tzinfo is not None
    assert identity.describe() == "site township-a1"


def test_gateway_and_operator_identities(ca: CertificateAuthority, tmp_path: Path) -> None:
    gw_cert = ca.issue_gateway(tmp_path / "g", name="gateway-2").cert_path
    gw = identity_from_pem(gw_cert.read_bytes())
    assert (gw.role, gw.name, gw.site_id, gw.tier) == ("gateway", "gateway-2", None, None)
    op = identity_from_pem(ca.issue_operator("demo-tour", tmp_path / "o").cert_path.read_bytes())
    assert (op.role, op.name, op.site_id, op.tier) == ("operator", "demo-tour", None, None)


def test_certificate_without_federation_role_is_refused() -> None:
    pem = _self_signed("hospital-web", ["https://example.org/"])
    with pytest.raises(AuthenticationError) as err:
        identity_from_pem(pem)
    assert str(err.value) == (
        "certificate CN=hospital-web carries no urn:federation:role:… — it was not issued by "
        "`federation ca issue`")
    with pytest.raises(AuthenticationError, match="carries no urn:federation:role"):
        identity_from_pem(_self_signed("no-san-at-all", []))


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        (["urn:federation:role:node", "urn:federation:tier:county"],
         "exactly one urn:federation:site:"),
        (["urn:federation:role:node", "urn:federation:site:county-a"],
         "exactly one urn:federation:tier:"),
        (["urn:federation:role:node", "urn:federation:site:county-a",
          "urn:federation:tier:province"], "tier 'province' is not valid"),
        (["urn:federation:role:node", "urn:federation:role:operator"],
         "exactly one urn:federation:role:"),
        (["urn:federation:role:admin"], "unknown role 'admin'"),
    ],
)
def test_malformed_federation_identities_are_refused(uris: list[str], message: str) -> None:
    with pytest.raises(AuthenticationError, match=message):
        identity_from_pem(_self_signed("odd", uris))


def test_garbage_is_not_a_certificate() -> None:
    with pytest.raises(AuthenticationError, match="not a readable PEM certificate"):
        identity_from_pem(b"hello")


@pytest.mark.parametrize("form", ["0x00AB:CD", "abcd", "ABCD", "00abcd", 0xABCD])
def test_serials_are_normalised(form: str | int) -> None:
    assert normalize_serial(form) == "abcd"


# ---------------------------------------------------------------------------- revocation


def test_missing_crl_means_nothing_is_revoked(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue_node("county-a", "county", tmp_path / "n")
    revocations = RevocationList(tmp_path / "no-such-crl.pem", ca.ca_pem)
    assert revocations.is_revoked(issued.serial) is None
    assert len(revocations) == 0 and revocations.next_update is None
    revocations.check(identity_from_pem(issued.cert_path.read_bytes()))  # does not raise


def test_revoked_serial_is_reported_with_date_and_reason(ca: CertificateAuthority,
                                                         tmp_path: Path) -> None:
    revoked = ca.issue_node("county-a", "county", tmp_path / "a")
    kept = ca.issue_node("county-b", "county", tmp_path / "b")
    (record,) = ca.revoke(revoked.serial, reason="key_compromise")
    revocations = RevocationList(ca.crl_path, ca.ca_pem)
    entry = revocations.is_revoked(revoked.serial)
    assert entry is not None
    assert (entry.serial, entry.reason, entry.revoked_at) == (
        revoked.serial, "key_compromise", record.revoked_at)
    assert revocations.is_revoked(revoked.serial.upper()) == entry
    assert revocations.is_revoked(kept.serial) is None
    revocations.check(identity_from_pem(kept.cert_path.read_bytes()))

    with pytest.raises(CertificateRevoked) as err:
        revocations.check(identity_from_pem(revoked.cert_path.read_bytes()))
    assert str(err.value) == (
        f"certificate serial {revoked.serial} for site county-a was revoked on "
        f"{record.revoked_at:%Y-%m-%d %H:%M} UTC (reason key_compromise); ask the consortium "
        f"administrator to issue a new one with `federation ca issue`")
    assert err.value.code == "certificate-revoked"


def test_unspecified_reason_reads_back(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue_operator("tester", tmp_path / "t")
    ca.revoke(issued.serial)
    revocations = RevocationList(ca.crl_path, ca.ca_pem)
    assert revocations.is_revoked(issued.serial).reason == "unspecified"
    with pytest.raises(CertificateRevoked, match="for operator tester was revoked"):
        revocations.check(identity_from_pem(issued.cert_path.read_bytes()))


def test_crl_is_reloaded_after_revoke_within_the_recheck_interval(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    issued = ca.issue_node("county-a", "county", tmp_path / "a")
    clock = FakeClock()
    revocations = RevocationList(ca.crl_path, ca.ca_pem, recheck_seconds=2.0, clock=clock)
    assert revocations.is_revoked(issued.serial) is None

    ca.revoke(site_id="county-a", reason="affiliation_changed")
    clock.now += 1.0
    assert revocations.is_revoked(issued.serial) is None  # not re-checked yet: at most every 2 s
    clock.now += 1.5
    entry = revocations.is_revoked(issued.serial)
    assert entry is not None and entry.reason == "affiliation_changed"


def test_crl_appearing_later_is_picked_up(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue_node("county-a", "county", tmp_path / "a")
    crl = tmp_path / "copied-crl.pem"
    clock = FakeClock()
    revocations = RevocationList(crl, ca.ca_pem, clock=clock)
    ca.revoke(issued.serial)
    crl.write_bytes(ca.crl_path.read_bytes())
    clock.now += 3
    assert revocations.is_revoked(issued.serial) is not None


def test_crl_signed_by_a_foreign_ca_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    foreign = init_ca(tmp_path / "foreign-ca", consortium="Some Other Consortium")
    with pytest.raises(ConfigError, match="is not signed by the consortium CA"):
        RevocationList(foreign.crl_path, ca.ca_pem)


def test_crl_with_our_issuer_name_but_a_foreign_signature_is_refused(tmp_path: Path) -> None:
    # same consortium name => same issuer DN; only the signature tells them apart
    ours = init_ca(tmp_path / "ours", consortium="Same Name")
    impostor = init_ca(tmp_path / "impostor", consortium="Same Name")
    assert impostor.certificate.subject == ours.certificate.subject
    with pytest.raises(ConfigError, match="is not signed by the consortium CA"):
        RevocationList(impostor.crl_path, ours.ca_pem)


def test_bad_crl_on_reload_keeps_the_last_good_list(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issued = ca.issue_node("county-a", "county", tmp_path / "a")
    ca.revoke(issued.serial)
    clock = FakeClock()
    revocations = RevocationList(ca.crl_path, ca.ca_pem, clock=clock)
    assert revocations.is_revoked(issued.serial) is not None

    foreign = init_ca(tmp_path / "foreign-ca", consortium="Some Other Consortium")
    ca.crl_path.write_bytes(foreign.crl_path.read_bytes())  # an empty CRL from someone else
    clock.now += 3
    with caplog.at_level(logging.ERROR, logger="federation.security"):
        assert revocations.is_revoked(issued.serial) is not None
    assert "not signed by the consortium CA" in caplog.text

    ca.crl_path.unlink()  # deleting the CRL must not un-revoke anyone either
    clock.now += 3
    assert revocations.is_revoked(issued.serial) is not None


def test_garbage_crl_is_a_config_error(ca: CertificateAuthority, tmp_path: Path) -> None:
    bad = tmp_path / "crl.pem"
    bad.write_text("not a crl")
    with pytest.raises(ConfigError, match="is not a PEM certificate revocation list"):
        RevocationList(bad, ca.ca_pem)
