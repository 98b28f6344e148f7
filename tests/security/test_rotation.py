"""Certificate rotation without a restart: TlsFiles on disk, reloading server credentials
and the rotating client channel over real mutual TLS on loopback, and `ca rotate-node`."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509

from federation.cli import cli
from federation.errors import ConfigError, InvalidInput
from federation.rpc.channels import rotating_channel
from federation.rpc.rotating import RotatingChannel
from federation.security.ca import (
    GATEWAY_SERVER_NAME,
    CertificateAuthority,
    init_ca,
    node_server_name,
)
from federation.security.identity import identity_from_pem
from federation.security.rotation import TlsFiles, reloading_server_credentials
from federation.security.tls import peer_identity
from federation.settings import TlsSettings
from tests.conftest import served_serial

WHO = "/federation.test.Echo/WhoAmI"
SLOW = "/federation.test.Echo/Slow"


@dataclass(frozen=True)
class Live:
    """A node's TLS files where a running process reads them, and the CA that issues them."""

    ca: CertificateAuthority
    cert: Path
    key: Path
    ca_cert: Path

    def files(self, **kw: float) -> TlsFiles:
        return TlsFiles(self.cert, self.key, self.ca_cert, **kw)

    def rotate(self) -> str:
        return self.ca.rotate_node("county-a", self.cert, self.key).serial

    def serial(self) -> str:
        return identity_from_pem(self.cert.read_bytes()).serial


@pytest.fixture
def live(tmp_path: Path) -> Live:
    ca = init_ca(tmp_path / "ca", consortium="Test Consortium")
    issued = ca.issue_node("county-a", "county", tmp_path / "county-a")
    return Live(ca, issued.cert_path, issued.key_path, ca.cert_path)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "federation.security.rotation" and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------------- TlsFiles


def test_a_rotated_pair_is_taken(live: Live) -> None:
    files = live.files(recheck_seconds=0)
    old = identity_from_pem(files.material.cert_pem).serial
    new = live.rotate()
    assert new != old
    assert files.refresh() is True
    generation, material = files.current()
    assert generation == 1 == files.generation
    assert identity_from_pem(material.cert_pem).serial == new
    assert material.key_pem == live.key.read_bytes()
    assert files.refresh() is False  # nothing changed since


def test_the_same_bytes_written_again_are_no_rotation(live: Live) -> None:
    files = live.files(recheck_seconds=0)
    data = live.cert.read_bytes()
    live.cert.unlink()
    live.cert.write_bytes(data)  # new inode, same content
    os.utime(live.key)
    assert files.refresh() is False and files.generation == 0


def test_a_half_written_pair_keeps_the_current_one_with_one_warning(
        live: Live, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = live.files(recheck_seconds=0)
    old = live.serial()
    other = live.ca.issue_node("county-a", "county", tmp_path / "next")
    shutil.copyfile(other.cert_path, live.cert)           # the certificate, not yet its key
    with caplog.at_level(logging.WARNING, "federation.security.rotation"):
        assert files.refresh() is False
        assert files.refresh() is False                   # same files: not reported again
    assert identity_from_pem(files.material.cert_pem).serial == old
    [warning] = _warnings(caplog)
    assert "does not belong to the certificate" in warning and f"serial {old}" in warning
    assert "PRIVATE KEY" not in caplog.text
    shutil.copyfile(other.key_path, live.key)             # …and now the key follows
    assert files.refresh() is True
    assert identity_from_pem(files.material.cert_pem).serial == other.serial


def test_a_truncated_certificate_or_a_missing_key_is_ignored(
        live: Live, caplog: pytest.LogCaptureFixture) -> None:
    files = live.files(recheck_seconds=0)
    before = files.material
    data = live.cert.read_bytes()
    with caplog.at_level(logging.WARNING, "federation.security.rotation"):
        live.cert.write_bytes(data[: len(data) // 2])
        assert files.refresh() is False
        live.cert.write_bytes(data)
        live.key.unlink()
        assert files.refresh() is False
    assert files.material is before and files.generation == 0
    assert len(_warnings(caplog)) == 2
    assert "is not a PEM certificate" in _warnings(caplog)[0]
    assert "does not exist" in _warnings(caplog)[1]


def test_a_certificate_for_another_site_is_refused(
        live: Live, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = live.files(recheck_seconds=0)
    other = live.ca.issue_node("county-b", "county", tmp_path / "county-b")
    shutil.copyfile(other.key_path, live.key)
    shutil.copyfile(other.cert_path, live.cert)
    with caplog.at_level(logging.WARNING, "federation.security.rotation"):
        assert files.refresh() is False
    assert identity_from_pem(files.material.cert_pem).site_id == "county-a"
    assert "is for site county-b, not for the site county-a" in _warnings(caplog)[0]


def test_an_expired_certificate_is_refused(live: Live, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    import datetime as dt

    files = live.files(recheck_seconds=0)
    now = dt.datetime.now(dt.UTC)
    old = live.ca.issue_node("county-a", "county", tmp_path / "old",
                             not_before=now - dt.timedelta(days=9),
                             not_after=now - dt.timedelta(days=1))
    shutil.copyfile(old.key_path, live.key)
    shutil.copyfile(old.cert_path, live.cert)
    with caplog.at_level(logging.WARNING, "federation.security.rotation"):
        assert files.refresh() is False
    assert "expired on" in _warnings(caplog)[0]


def test_the_files_are_looked_at_no_more_than_every_recheck_seconds(live: Live) -> None:
    now = [100.0]
    files = live.files(recheck_seconds=1.0, clock=lambda: now[0])
    live.rotate()
    now[0] += 0.5
    assert files.current()[0] == 0        # too soon to look
    now[0] += 0.6
    assert files.current()[0] == 1
    assert files.refresh(force=True) is False


def test_unusable_files_at_start_fail_fast(live: Live, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TlsFiles(live.cert, tmp_path / "missing.key", live.ca_cert)


# ---------------------------------------------------------------------------- over gRPC


async def _who_am_i(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return peer_identity(context).serial.encode()


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(int(request or b"5")):
        await asyncio.sleep(0.1)
        yield peer_identity(context).serial.encode()


async def _server(files: TlsFiles) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "federation.test.Echo", {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(_who_am_i),
            "Slow": grpc.unary_stream_rpc_method_handler(_slow)})])
    port = server.add_secure_port("127.0.0.1:0", reloading_server_credentials(files))
    await server.start()
    return server, port


@pytest.fixture
def gateway_files(live: Live, tmp_path: Path) -> TlsFiles:
    issued = live.ca.issue_gateway(tmp_path / "gateway")
    return TlsFiles(issued.cert_path, issued.key_path, issued.ca_path)


def _served(port: int, client: TlsFiles) -> str:
    cert = client.cert_path
    return served_serial(port, TlsSettings(cert, cert.with_suffix(".key"), cert.parent / "ca.crt"))


async def test_the_server_presents_a_rotated_certificate_to_new_connections(
        live: Live, gateway_files: TlsFiles) -> None:
    files = live.files(recheck_seconds=0)
    server, port = await _server(files)
    old = live.serial()
    try:
        assert await asyncio.to_thread(_served, port, gateway_files) == old
        channel = rotating_channel(f"127.0.0.1:{port}", gateway_files, 1 << 20,
                                   server_name=node_server_name("county-a"))
        async with channel:
            await channel.unary_unary(WHO)(b"", timeout=5)  # a connection made before
            new = await asyncio.to_thread(live.rotate)
            assert await asyncio.to_thread(_served, port, gateway_files) == new
            await channel.unary_unary(WHO)(b"", timeout=5)  # …still works
    finally:
        await server.stop(0)


async def test_a_client_presents_its_rotated_certificate_without_a_failed_call(
        live: Live, gateway_files: TlsFiles) -> None:
    server, port = await _server(gateway_files)
    files = live.files(recheck_seconds=0.05)
    old = live.serial()
    seen: list[str] = []
    channel = rotating_channel(f"127.0.0.1:{port}", files, 1 << 20,
                               server_name=GATEWAY_SERVER_NAME)
    who = channel.unary_unary(WHO)  # bound once, like a stub's method
    try:
        async with channel:
            async def calls() -> None:
                for _ in range(60):
                    seen.append((await who(b"", timeout=5)).decode())
                    await asyncio.sleep(0.01)

            driver = asyncio.create_task(calls())
            await asyncio.sleep(0.2)
            new = await asyncio.to_thread(live.rotate)
            await driver                      # raises if any call failed
            assert channel.generation == 1
    finally:
        await server.stop(0)
    assert seen[0] == old and seen[-1] == new
    assert set(seen) == {old, new}
    switched = seen.index(new)
    assert all(s == new for s in seen[switched:])   # once switched, never back


async def test_a_running_stream_finishes_on_the_old_connection(
        live: Live, gateway_files: TlsFiles) -> None:
    server, port = await _server(gateway_files)
    files = live.files(recheck_seconds=0)
    old = live.serial()
    channel = rotating_channel(f"127.0.0.1:{port}", files, 1 << 20,
                               server_name=GATEWAY_SERVER_NAME)
    try:
        async with channel:
            stream = channel.unary_stream(SLOW)(b"8", timeout=10)
            first = await stream.read()
            new = await asyncio.to_thread(live.rotate)
            assert (await channel.unary_unary(WHO)(b"", timeout=5)).decode() == new
            rest = []
            while (message := await stream.read()) is not grpc.aio.EOF:
                rest.append(message)
    finally:
        await server.stop(0)
    assert {first.decode(), *(m.decode() for m in rest)} == {old}
    assert len(rest) == 7 and await stream.code() == grpc.StatusCode.OK


async def test_an_idle_previous_channel_is_closed_at_once(
        live: Live, gateway_files: TlsFiles) -> None:
    server, port = await _server(gateway_files)
    channel = rotating_channel(f"127.0.0.1:{port}", live.files(recheck_seconds=0), 1 << 20,
                               server_name=GATEWAY_SERVER_NAME)   # the default grace: 15 min
    try:
        async with channel:
            await channel.unary_unary(WHO)(b"", timeout=5)
            await asyncio.to_thread(live.rotate)
            await channel.unary_unary(WHO)(b"", timeout=5)
            for _ in range(50):
                if not channel.retiring:
                    break
                await asyncio.sleep(0.05)
            assert channel.retiring == 0
    finally:
        await server.stop(0)


async def test_calls_outliving_the_grace_are_cancelled(
        live: Live, gateway_files: TlsFiles) -> None:
    server, port = await _server(gateway_files)
    files = live.files(recheck_seconds=0)
    channel = RotatingChannel(f"127.0.0.1:{port}", files,
                              [("grpc.ssl_target_name_override", GATEWAY_SERVER_NAME)], grace=0.3)
    try:
        async with channel:
            stream = channel.unary_stream(SLOW)(b"50", timeout=10)   # outlives the grace
            await stream.read()
            new = await asyncio.to_thread(live.rotate)
            assert (await channel.unary_unary(WHO)(b"", timeout=5)).decode() == new
            assert channel.retiring == 1
            with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)):
                while await stream.read() is not grpc.aio.EOF:   # cancelled by the close
                    pass
            for _ in range(50):
                if not channel.retiring:
                    break
                await asyncio.sleep(0.05)
            assert channel.retiring == 0
    finally:
        await server.stop(0)


async def test_rotation_waits_for_the_next_generation(live: Live) -> None:
    files = live.files(recheck_seconds=0.02)
    channel = rotating_channel("127.0.0.1:1", files, 1 << 20)
    async with channel:
        waiter = asyncio.create_task(channel.rotation(channel.generation))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await asyncio.to_thread(live.rotate)
        assert await asyncio.wait_for(waiter, 5) == 1


# ---------------------------------------------------------------------------- the CA


def test_rotate_node_keeps_tier_hosts_and_file_mode(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", consortium="Test Consortium")
    first = ca.issue_node("township-a1", "township", tmp_path / "site",
                          hosts=("site-a1.example.org", "10.1.2.3"))
    first.key_path.chmod(0o640)
    rotated = ca.rotate_node("township-a1", first.cert_path, first.key_path)
    assert rotated.serial != first.serial and rotated.tier == "township"
    assert rotated.cert_path == first.cert_path and rotated.key_path == first.key_path
    cert = x509.load_pem_x509_certificate(first.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "site-a1.example.org", node_server_name("township-a1")}
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert identity_from_pem(first.cert_path.read_bytes()).tier == "township"
    assert first.key_path.stat().st_mode & 0o777 == 0o640
    assert not list(first.cert_path.parent.glob(".*"))      # no temporary file left behind
    records = {r.serial: r for r in ca.list_issued()}
    assert records[first.serial].revoked_at is None       # overlap: the old one stays valid
    assert records[rotated.serial].site_id == "township-a1"


def test_rotate_node_needs_a_site_the_ca_knows(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", consortium="Test Consortium")
    with pytest.raises(InvalidInput, match="issued no node certificate to site 'county-z'"):
        ca.rotate_node("county-z", tmp_path / "n.crt", tmp_path / "n.key")


def test_cli_rotate_node(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", consortium="Test Consortium")
    first = ca.issue_node("county-a", "county", tmp_path / "county-a")
    runner = CliRunner()
    result = runner.invoke(cli, ["ca", "rotate-node", "county-a", "--ca-dir", str(ca.ca_dir),
                                 "--cert", str(first.cert_path), "--key", str(first.key_path)])
    assert result.exit_code == 0, result.output
    new = identity_from_pem(first.cert_path.read_bytes()).serial
    assert f"serial {new}" in result.output
    assert f"federation ca revoke --serial {first.serial} --reason superseded" in result.output

    site_toml = tmp_path / "site.toml"
    site_toml.write_text('site_id = "county-b"\n[tls]\ncert = "county-a/county-a.crt"\n'
                         'key = "county-a/county-a.key"\nca = "ca/ca.crt"\n'
                         '[source]\nkind = "csv"\npath = "data"\n')
    wrong = runner.invoke(cli, ["ca", "rotate-node", "county-a", "--ca-dir", str(ca.ca_dir),
                                "--config", str(site_toml)])
    assert wrong.exit_code == 2 and "is the node of site 'county-b'" in wrong.output
    site_toml.write_text(site_toml.read_text().replace("county-b", "county-a", 1))
    again = runner.invoke(cli, ["ca", "rotate-node", "county-a", "--ca-dir", str(ca.ca_dir),
                                "--config", str(site_toml)])
    assert again.exit_code == 0, again.output
    assert identity_from_pem(first.cert_path.read_bytes()).serial != new
