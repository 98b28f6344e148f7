"""deploy/site: install.sh laid out under DESTDIR (a dry run: no useradd, no systemctl),
the site.toml it writes loaded by the node's settings loader and checked by the doctor
against a real gateway; the systemd unit's hardening rated by systemd-analyze."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from federation.nodes.doctor import render, run_doctor
from federation.settings import NodeSettings, load_node_settings

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "site"


def _install(destdir: Path, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SITE / "install.sh"), *args],
                          env=os.environ | {"DESTDIR": str(destdir)} | (env or {}),
                          capture_output=True, text=True, timeout=300)


def _township_args(consortium, pki) -> list[str]:
    spec = next(s for s in consortium.sites if s.site_id == "township-a1")
    return ["--site-id", "township-a1", "--gateway", "GATEWAY", "--source-kind", "csv",
            "--source-path", str(spec.source_path), "--pki", str(pki.root / "township-a1")]


async def test_a_dry_run_install_passes_the_doctor(gateway, pki, consortium, tmp_path):
    dest = tmp_path / "root"
    args = _township_args(consortium, pki)
    args[args.index("GATEWAY")] = f"127.0.0.1:{gateway.grpc_port}"
    run = _install(dest, *args, "--no-venv")
    assert run.returncode == 0, run.stderr
    for line in ("would run: useradd --system", "would run: chown root:federation /etc/federation/pki/node.key",
                 "would run: systemctl daemon-reload",
                 "would run: systemctl enable --now federation-node.service"):
        assert line in run.stdout, run.stdout
    etc = dest / "etc/federation"
    assert (dest / "etc/systemd/system/federation-node.service").read_bytes() == \
        (SITE / "federation-node.service").read_bytes()
    assert oct((etc / "pki/node.key").stat().st_mode & 0o777) == "0o640"
    assert oct((etc / "site.toml").stat().st_mode & 0o777) == "0o640"
    assert (dest / "var/lib/federation").is_dir()

    text = (etc / "site.toml").read_text()
    assert "@" not in text.split("\n# ")[0] and not re.search(r"@[A-Z_]+@", text)
    settings = load_node_settings(etc / "site.toml", env={})
    assert settings.site_id == "township-a1" and settings.source.kind == "csv"
    assert settings.tls.cert == Path("/etc/federation/pki/node.crt")
    # the installed files, where DESTDIR put them, make a site the doctor passes
    rooted = dataclasses.replace(
        settings, state_dir=dest / "var/lib/federation",
        tls=dataclasses.replace(settings.tls, **{
            f: dest / str(getattr(settings.tls, f)).lstrip("/") for f in ("cert", "key", "ca", "crl")}))
    findings = await run_doctor(rooted)
    assert all(f.ok for f in findings), render(findings)

    again = _install(dest, *args, "--no-venv")                 # a rerun keeps the config
    assert again.returncode == 0 and "keeping the existing" in again.stdout
    assert (etc / "site.toml").read_text() == text


def test_every_key_of_the_template_is_a_real_setting(tmp_path):
    run = _install(tmp_path, "--site-id", "county-a", "--gateway", "gw:50051",
                   "--source-kind", "sql", "--source-path", "/data/his.sqlite",
                   "--mapping", "vendor_a", "--advertise", "10.1.2.3:50061", "--no-venv")
    assert run.returncode == 0, run.stderr
    data = tomllib.loads((tmp_path / "etc/federation/site.toml").read_text())
    fields = {f.name for f in dataclasses.fields(NodeSettings)}
    for key, value in data.items():
        assert key in fields, key
        if isinstance(value, dict):
            sub = {"tls": {"cert", "key", "ca", "crl"}, "source": {"kind", "path", "mapping", "extra"}}
            assert set(value) <= sub[key], (key, value)
    s = load_node_settings(tmp_path / "etc/federation/site.toml", env={})
    assert (s.advertise, s.source.mapping, s.gateway) == ("10.1.2.3:50061", "vendor_a", "gw:50051")


@pytest.mark.parametrize("args, message", [
    ([], "--site-id is required"),
    (["--site-id", "a1", "--gateway", "g:1", "--source-kind", "sql", "--source-path", "x"],
     "needs --mapping"),
    (["--site-id", "Bad Id", "--gateway", "g:1", "--source-kind", "csv", "--source-path", "x"],
     "is not a site id"),
    (["--site-id", "a1", "--gateway", "g:1", "--source-kind", "excel", "--source-path", "x"],
     "must be sql, csv, hl7 or pacs"),
])
def test_bad_arguments_stop_it_with_a_reason(tmp_path, args, message):
    run = _install(tmp_path, *args)
    assert run.returncode == 2 and message in run.stderr
    assert not (tmp_path / "etc").exists()


def test_it_builds_the_virtual_environment(tmp_path):
    # a wheel of this checkout (built with this environment's setuptools, offline); the
    # dependencies are left out to keep the test short — a site's pip fetches them
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   capture_output=True, timeout=300)
    (wheel,) = wheels.glob("federation-*.whl")
    root = tmp_path / "root"
    run = _install(root, "--site-id", "a1", "--gateway", "g:1", "--source-kind", "csv",
                   "--source-path", "/x", "--package", str(wheel),
                   env={"PYTHON": sys.executable, "PIP_ARGS": "--no-deps"})
    assert run.returncode == 0, run.stderr
    entry = root / "opt/federation/bin/federation"
    assert entry.is_file() and "federation.cli" in entry.read_text()
    assert (root / "opt/federation/share/README.md").is_file()


def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (SITE / "federation-node.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_the_unit_is_hardened():
    unit = _unit()
    assert unit["User"] == ["federation"] and unit["Group"] == ["federation"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": "",
                       "StateDirectory": "federation"}.items():
        assert unit[key] == [value], key
    assert unit["ExecStart"] == [
        "/opt/federation/bin/federation node serve --config /etc/federation/site.toml"]
    assert unit["ExecStartPre"][0].startswith("-/opt/federation/bin/federation node doctor")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_rates_the_unit_ok():
    run = subprocess.run(["systemd-analyze", "security", "--offline=true",
                          str(SITE / "federation-node.service")],
                         capture_output=True, text=True, timeout=60)
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", run.stdout).group(1))
    assert score <= 2.0, run.stdout[-2000:]
