"""``federation node doctor`` against a real gateway on loopback with real certificates:
a healthy site passes every check; each broken set-up fails the check that names it,
with the fix, and the command exits non-zero."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from federation.gateway.app import start_gateway
from federation.nodes.doctor import Finding, render, run_doctor
from federation.settings import SourceSettings
from tests.conftest import gateway_settings, node_settings


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def _failed(findings: list[Finding]) -> set[str]:
    return {f.check for f in findings if not f.ok}


def _site(pki, consortium, gateway, tmp_path, site_id="county-a", **kw):
    return node_settings(pki, consortium, site_id, gateway.grpc_port, tmp_path, **kw)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_healthy_site_passes_every_check(gateway, pki, consortium, tmp_path):
    findings = await run_doctor(_site(pki, consortium, gateway, tmp_path, site_id="county-b"))
    checks = _by_check(findings)
    assert _failed(findings) == set(), render(findings)
    for name in ("certificate files", "certificate dates", "trusted by the consortium CA",
                 "not revoked", "site id", "gateway reachable", "gateway TLS", "gateway gRPC",
                 "consortium registry", "clock skew", "state dir"):
        assert name in checks, name
    assert "county member; its node is never registered" in checks["consortium registry"].detail
    assert abs(float(checks["clock skew"].detail.split(" s ")[0].split()[-1])) < 5
    sources = [f for f in findings if f.check.startswith("source ")]
    assert {f.check.split()[1] for f in sources} == {"sql", "hl7"}  # county-b: HIS + LIS feed
    mapping = next(f for f in findings if f.check.startswith("mapping"))
    assert "matches the database" in mapping.detail
    assert render(findings).endswith("all checks passed")
    # the doctor registers nothing: the gateway still has no node for the site
    assert gateway.store.get_node("county-b") is None


async def test_an_expired_certificate_is_named_and_the_gateway_refuses_it(
        gateway, pki, consortium, tmp_path):
    findings = await run_doctor(_site(pki, consortium, gateway, tmp_path, cert_name="expired"))
    checks = _by_check(findings)
    assert {"certificate dates", "gateway TLS"} <= _failed(findings)
    assert "expired on" in checks["certificate dates"].detail
    assert "federation ca issue --site county-a" in checks["certificate dates"].fix
    assert "refused this site's certificate" in checks["gateway TLS"].detail
    assert checks["trusted by the consortium CA"].ok and checks["site id"].ok


async def test_a_certificate_from_a_foreign_ca_is_not_trusted(gateway, pki, consortium,
                                                                tmp_path):
    findings = await run_doctor(_site(pki, consortium, gateway, tmp_path, cert_name="foreign"))
    checks = _by_check(findings)
    assert {"trusted by the consortium CA", "gateway TLS"} <= _failed(findings)
    assert "Some Other Consortium" in checks["trusted by the consortium CA"].detail
    assert checks["certificate dates"].ok


async def test_a_certificate_for_another_site_fails_the_site_id_check(
        gateway, pki, consortium, tmp_path):
    settings = replace(_site(pki, consortium, gateway, tmp_path, site_id="county-b"),
                       tls=pki.tls("county-a"))
    findings = await run_doctor(settings)
    checks = _by_check(findings)
    assert _failed(findings) == {"site id"}, render(findings)
    assert "site_id = 'county-b' but the certificate is for node 'county-a'" in \
        checks["site id"].detail


async def test_an_unreachable_gateway_fails_fast_with_the_address(pki, consortium, tmp_path):
    port = _closed_port()
    settings = node_settings(pki, consortium, "township-a1", port, tmp_path)
    started = asyncio.get_running_loop().time()
    findings = await run_doctor(settings, timeout=2)
    assert asyncio.get_running_loop().time() - started < 5
    checks = _by_check(findings)
    assert {"gateway reachable", "clock skew"} <= _failed(findings)
    assert f"127.0.0.1:{port}" in checks["gateway reachable"].detail
    assert "firewall" in checks["gateway reachable"].fix
    assert checks["source csv " + str(settings.source.path)].ok  # the rest is still checked


async def test_an_unreadable_database_is_reported(gateway, pki, consortium, tmp_path):
    broken = tmp_path / "his.sqlite"
    broken.write_bytes(b"this is not a database " * 100)
    settings = _site(pki, consortium, gateway, tmp_path)
    settings = replace(settings, source=replace(settings.source, path=broken))
    findings = await run_doctor(settings)
    source = _by_check(findings)[f"source sql {broken}"]
    assert not source.ok and "cannot be read as a SQLite database" in source.detail
    mapping = next(f for f in findings if f.check.startswith("mapping"))
    assert mapping.warning and "not compared with the database" in mapping.detail
    assert "1 check failed" in render(findings)

    missing = replace(settings, source=replace(settings.source, path=tmp_path / "nope.db"))
    findings = await run_doctor(missing)
    assert "does not exist" in _by_check(findings)[f"source sql {tmp_path / 'nope.db'}"].detail


async def test_a_mapping_that_names_a_missing_column_points_at_its_line(
        gateway, pki, consortium, tmp_path):
    from federation.nodes.adapters.sql import MAPPINGS_DIR

    text = (MAPPINGS_DIR / "vendor_a.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    # find the patients table's first column setting and break it
    start = lines.index("[patients.columns]")
    number = next(i for i in range(start + 1, len(lines)) if "=" in lines[i])
    key = lines[number].split("=")[0].strip()
    lines[number] = f'{key} = "no_such_column"'
    bad = tmp_path / "my_mapping.toml"
    bad.write_text("\n".join(lines), encoding="utf-8")
    settings = _site(pki, consortium, gateway, tmp_path)
    settings = replace(settings, source=replace(settings.source, mapping=str(bad)))
    findings = await run_doctor(settings)
    mapping = next(f for f in findings if f.check.startswith("mapping"))
    assert not mapping.ok
    assert f"my_mapping.toml line {number + 1}" in mapping.detail
    assert "no_such_column" in mapping.detail

    bad.write_text("[patients]\ntable = \n", encoding="utf-8")
    findings = await run_doctor(settings)
    mapping = next(f for f in findings if f.check.startswith("mapping"))
    assert not mapping.ok and "line 2" in mapping.detail


async def test_a_skewed_clock_fails_the_skew_check(gateway, pki, consortium, tmp_path):
    ahead = dt.timedelta(minutes=10)
    findings = await run_doctor(_site(pki, consortium, gateway, tmp_path),
                                clock=lambda: dt.datetime.now(dt.UTC) + ahead)
    skew = _by_check(findings)["clock skew"]
    assert not skew.ok
    assert "ahead of the gateway" in skew.detail and "timedatectl" in skew.fix
    assert 595 < float(skew.detail.split("machine is ")[1].split(" s ")[0]) < 605


async def test_a_state_dir_blocked_by_a_file_fails(gateway, pki, consortium, tmp_path):
    blocker = tmp_path / "state-file"
    blocker.write_text("x")
    settings = replace(_site(pki, consortium, gateway, tmp_path), state_dir=blocker)
    findings = await run_doctor(settings)
    assert _failed(findings) == {"state dir"}
    assert "not a directory" in _by_check(findings)["state dir"].detail


async def test_a_site_missing_from_the_registry_is_named(gateway, pki, consortium, tmp_path):
    settings = replace(_site(pki, consortium, gateway, tmp_path), site_id="ghost-9",
                       tls=pki.tls("ghost-9"))
    findings = await run_doctor(settings)
    assert _failed(findings) == {"consortium registry"}, render(findings)
    assert "federation site add --id ghost-9" in _by_check(findings)["consortium registry"].fix


async def test_a_revoked_certificate_is_caught_here_and_refused_by_the_gateway(
        private_pki, consortium, tmp_path):
    private_pki.ca.revoke(site_id="township-a2", reason="key_compromise")
    gw = await start_gateway(gateway_settings(private_pki, f"sqlite:///{tmp_path}/g.db",
                                              consortium))
    try:
        settings = node_settings(private_pki, consortium, "township-a2", gw.grpc_port, tmp_path)
        findings = await run_doctor(settings)
    finally:
        await gw.stop(0.1)
    checks = _by_check(findings)
    assert {"not revoked", "gateway gRPC"} <= _failed(findings)
    assert "key_compromise" in checks["not revoked"].detail
    assert "revoked" in checks["gateway gRPC"].detail


async def test_the_cli_prints_a_line_per_check_and_its_exit_status(gateway, pki, consortium,
                                                                    tmp_path):
    good = _site(pki, consortium, gateway, tmp_path, site_id="township-a1")
    config = _write_site_toml(tmp_path / "good.toml", good)
    code, out = await _doctor_cli(config)
    assert code == 0, out
    assert out.count("✓") >= 10 and "✗" not in out and "all checks passed" in out

    broken = replace(good, gateway=f"127.0.0.1:{_closed_port()}")
    code, out = await _doctor_cli(_write_site_toml(tmp_path / "bad.toml", broken))
    assert code == 1
    assert "✗ gateway reachable" in out and "    → " in out and "checks failed" in out


async def _doctor_cli(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.cli", "node", "doctor", "--config", str(config),
        "--timeout", "3", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


def _write_site_toml(path: Path, s) -> Path:
    def src(source: SourceSettings) -> str:
        mapping = f'mapping = "{source.mapping}"\n' if source.mapping else ""
        return f'kind = "{source.kind}"\npath = "{source.path}"\n{mapping}'

    extra = "".join(f"[[source.extra]]\n{src(e)}" for e in s.source.extra)
    path.write_text(
        f'site_id = "{s.site_id}"\nlisten = "127.0.0.1:0"\ngateway = "{s.gateway}"\n'
        f'state_dir = "{s.state_dir}"\n'
        f'[tls]\ncert = "{s.tls.cert}"\nkey = "{s.tls.key}"\nca = "{s.tls.ca}"\n'
        f'crl = "{s.tls.crl}"\n[source]\n{src(s.source)}{extra}', encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_stray_state(tmp_path):
    yield
    # the doctor only ever writes a temporary probe file into an existing state dir
    assert not list(tmp_path.rglob(".doctor-*"))
