"""TLS material from disk, and real mutual-TLS handshakes on loopback (no mocks).

What the *client* sees when the server refuses its certificate is worth knowing: with
TLS 1.3 the client has finished its side of the handshake before the server checks the
client certificate, so the call fails with ``UNAVAILABLE`` and the details say only
``…: Socket closed``; the reason (expired, unknown issuer, no certificate) is logged by
the server's gRPC core. When the client refuses the *server*, the details name it
(``Tls handshake failed … CERTIFICATE_VERIFY_FAILED`` or ``Hostname Verification Check
failed``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from federation.errors import AuthenticationError, ConfigError
from federation.security.ca import (
    GATEWAY_SERVER_NAME,
    CertificateAuthority,
    init_ca,
    node_server_name,
)
from federation.security.tls import (
    TlsMaterial,
    channel_credentials,
    check_certificate_validity,
    peer_identity,
    server_credentials,
)

METHOD = "/federation.test.Echo/WhoAmI"


@dataclass(frozen=True)
class Pki:
    root: Path
    ca: CertificateAuthority

    def paths(self, name: str) -> tuple[Path, Path, Path]:
        folder = self.root / name
        return folder / f"{name}.crt", folder / f"{name}.key", folder / "ca.crt"

    def material(self, name: str) -> TlsMaterial:
        return TlsMaterial.load(*self.paths(name))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = init_ca(root / "ca", consortium="Test Consortium")
    ca.issue_gateway(root / "gateway")
    ca.issue_node("county-a", "county", root / "county-a")
    ca.issue_operator("tester", root / "tester")
    now = dt.datetime.now(dt.UTC)
    ca.issue_node("county-a", "county", root / "expired",
                  not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    ca.issue_node("county-a", "county", root / "future",
                  not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(days=30))
    foreign = init_ca(root / "foreign-ca", consortium="Some Other Consortium")
    foreign.issue_node("county-a", "county", root / "foreign")   # its ca.crt is the foreign CA
    return Pki(root, ca)


# ---------------------------------------------------------------------------- TlsMaterial


def test_load_reads_the_three_files(pki: Pki) -> None:
    m = pki.material("county-a")
    cert, key, ca = pki.paths("county-a")
    assert (m.cert_pem, m.key_pem, m.ca_pem) == (cert.read_bytes(), key.read_bytes(),
                                                 ca.read_bytes())
    assert b"PRIVATE KEY" not in repr(m).encode()


@pytest.mark.parametrize("which", [0, 1, 2])
def test_load_names_a_missing_file(pki: Pki, tmp_path: Path, which: int) -> None:
    paths = list(pki.paths("county-a"))
    paths[which] = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=r"missing\.pem does not exist"):
        TlsMaterial.load(*paths)


def test_load_refuses_a_key_that_does_not_match(pki: Pki) -> None:
    cert, _, ca = pki.paths("county-a")
    _, other_key, _ = pki.paths("gateway")
    with pytest.raises(ConfigError, match=r"gateway\.key does not belong to the certificate"):
        TlsMaterial.load(cert, other_key, ca)


def test_load_refuses_a_certificate_from_a_foreign_ca(pki: Pki) -> None:
    cert, key, _ = pki.paths("foreign")
    with pytest.raises(ConfigError) as err:
        TlsMaterial.load(cert, key, pki.ca.cert_path)
    assert "was not signed by the CA in" in str(err.value)
    assert "Some Other Consortium CA" in str(err.value) and "Test Consortium CA" in str(err.value)


def test_load_refuses_files_that_are_not_pem(pki: Pki, tmp_path: Path) -> None:
    cert, key, ca = pki.paths("county-a")
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    with pytest.raises(ConfigError, match=r"junk\.pem is not a PEM certificate"):
        TlsMaterial.load(junk, key, ca)
    with pytest.raises(ConfigError, match=r"junk\.pem is not an unencrypted PEM private key"):
        TlsMaterial.load(cert, junk, ca)


def test_load_accepts_an_expired_certificate_so_doctor_can_explain_it(pki: Pki) -> None:
    m = pki.material("expired")
    report = check_certificate_validity(m.cert_pem)
    assert (report.status, report.ok) == ("expired", False)
    assert report.message.startswith("certificate CN=county-a expired on ")
    assert f"{report.not_after:%Y-%m-%d}" in report.message


def test_validity_report(pki: Pki) -> None:
    future = check_certificate_validity(pki.material("future").cert_pem)
    assert future.status == "not-yet-valid" and "is not valid until" in future.message
    good = pki.material("county-a").cert_pem
    assert check_certificate_validity(good).ok
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    assert check_certificate_validity(good, now=later).status == "expired"


# ---------------------------------------------------------------------------- handshakes


async def _who_am_i(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    try:
        identity = peer_identity(context)
    except AuthenticationError as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
    return f"{identity.role}:{identity.name}:{identity.tier}".encode()


@pytest.fixture
async def server_port(pki: Pki) -> AsyncIterator[int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "federation.test.Echo", {"WhoAmI": grpc.unary_unary_rpc_method_handler(_who_am_i)})])
    port = server.add_secure_port("127.0.0.1:0", server_credentials(pki.material("gateway")))
    await server.start()
    yield port
    await server.stop(0)


async def _call(port: int, creds: grpc.ChannelCredentials,
                server_name: str | None = GATEWAY_SERVER_NAME) -> bytes:
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        return await channel.unary_unary(METHOD)(b"", timeout=5)


async def test_node_is_identified_by_its_certificate(pki: Pki, server_port: int) -> None:
    assert await _call(server_port, channel_credentials(pki.material("county-a"))) == (
        b"node:county-a:county")
    assert await _call(server_port, channel_credentials(pki.material("tester"))) == (
        b"operator:tester:None")


async def test_loopback_ip_in_the_certificate_also_verifies(pki: Pki, server_port: int) -> None:
    creds = channel_credentials(pki.material("county-a"))
    assert await _call(server_port, creds, server_name=None) == b"node:county-a:county"


def _client_rejected_by_server(err: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> None:
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Socket closed" in err.value.details()  # the reason stays in the server's log


async def test_client_with_a_foreign_ca_certificate_fails(pki: Pki, server_port: int) -> None:
    foreign = pki.material("foreign")
    creds = grpc.ssl_channel_credentials(  # trusts our CA, presents the foreign cert
        root_certificates=pki.ca.ca_pem, private_key=foreign.key_pem,
        certificate_chain=foreign.cert_pem)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server_port, creds)
    _client_rejected_by_server(err)


async def test_client_with_an_expired_certificate_fails(pki: Pki, server_port: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server_port, channel_credentials(pki.material("expired")))
    _client_rejected_by_server(err)


async def test_client_without_a_certificate_fails(pki: Pki, server_port: int) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.ca_pem)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server_port, creds)
    _client_rejected_by_server(err)


async def test_client_refuses_a_server_from_a_foreign_ca(pki: Pki) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "federation.test.Echo", {"WhoAmI": grpc.unary_unary_rpc_method_handler(_who_am_i)})])
    port = server.add_secure_port("127.0.0.1:0", server_credentials(pki.material("foreign")))
    await server.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(port, channel_credentials(pki.material("county-a")),
                        server_name=node_server_name("county-a"))
    finally:
        await server.stop(0)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in err.value.details()


async def test_client_refuses_a_server_answering_for_another_name(pki: Pki,
                                                                  server_port: int) -> None:
    # the gateway dials a node as <site>.nodes.federation.internal; the gateway's own
    # certificate does not carry that name, so the connection must fail
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server_port, channel_credentials(pki.material("county-a")),
                    server_name=node_server_name("county-a"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Hostname Verification Check failed" in err.value.details()


# ---------------------------------------------------------------------------- peer_identity


class _FakeContext:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_peer_identity_without_certificate_is_an_authentication_error() -> None:
    with pytest.raises(AuthenticationError, match="presented no client certificate"):
        peer_identity(_FakeContext({"transport_security_type": [b"ssl"]}))


def test_peer_identity_is_cached_per_certificate(pki: Pki) -> None:
    pem = pki.material("county-a").cert_pem
    first = peer_identity(_FakeContext({"x509_pem_cert": [pem]}))
    again = peer_identity(_FakeContext({"x509_pem_cert": [bytes(pem)]}))
    assert again is first
    other = peer_identity(_FakeContext({"x509_pem_cert": [pki.material("tester").cert_pem]}))
    assert other.role == "operator"


def test_foreign_folder_is_self_consistent(pki: Pki) -> None:
    # the foreign cert loads fine with its own CA: the refusal above is about trust, not files
    cert, key, ca = pki.paths("foreign")
    assert TlsMaterial.load(cert, key, ca).ca_pem != pki.ca.ca_pem
