"""deploy/compose checked offline: the compose file against the Compose Specification's
JSON schema (as vendored by check-jsonschema), ``docker compose config`` where the compose
plugin exists, and the wiring — make-secrets.sh run for real, each service's mounted
config loaded by our settings loader with its mounted secrets, each node's certificate
issued to the site its config names, each node's source paths present in a generated
synthetic consortium."""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from federation.security.identity import identity_from_pem
from federation.security.tls import TlsMaterial
from federation.settings import config_kind, load_gateway_settings, load_node_settings
from federation.synth import generate_consortium

FEDERATION = Path(sys.executable).parent / "federation"


@pytest.fixture(scope="module")
def compose_dir(deploy_copy) -> Path:
    folder = deploy_copy / "compose"
    env = os.environ | {"FEDERATION": str(FEDERATION)}
    run = subprocess.run(["sh", str(folder / "make-secrets.sh")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return folder


@pytest.fixture(scope="module")
def compose(compose_dir) -> dict[str, Any]:
    return yaml.safe_load((compose_dir / "compose.yaml").read_text())


def _schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def test_the_compose_file_follows_the_compose_specification(compose):
    jsonschema.validate(compose, _schema())
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["gateway"]["depends_on"]["migrate"]["condition"] = "service_ready"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema())


def test_docker_compose_config_accepts_it(compose_dir):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"],
                                        capture_output=True).returncode != 0:
        pytest.skip("no docker compose plugin here (the schema test covers the file)")
    run = subprocess.run([docker, "compose", "config", "-q"], cwd=compose_dir,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_every_reference_resolves(compose, compose_dir):
    services = compose["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, (name, dep)
        for entry in service.get("configs", []):
            assert entry["source"] in compose["configs"], (name, entry)
        for entry in service.get("secrets", []):
            source = entry if isinstance(entry, str) else entry["source"]
            assert source in compose["secrets"], (name, source)
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], (name, volume)
    for kind in ("configs", "secrets"):
        for name, entry in compose[kind].items():
            assert (compose_dir / entry["file"]).is_file(), (kind, name)


def test_everything_runs_unprivileged_and_in_order(compose):
    services = compose["services"]
    for name, service in services.items():
        if name == "postgres":
            continue
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    assert services["gateway"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    assert services["migrate"]["command"][:2] == ["db", "upgrade"]
    nodes = [n for n in services if n.startswith("node-")]
    assert len(nodes) >= 3
    for n in nodes:
        assert services[n]["depends_on"]["gateway"]["condition"] == "service_healthy"


def _mounted(compose, compose_dir: Path, service: str, root: Path) -> Path:
    """Lay out a service's configs and secrets as compose mounts them; its config path."""
    spec = compose["services"][service]
    for entry in spec.get("secrets", []):
        source, target = (entry, entry) if isinstance(entry, str) else \
            (entry["source"], entry.get("target", entry["source"]))
        dest = root / "run/secrets" / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(compose_dir / compose["secrets"][source]["file"], dest)
    (entry,) = spec["configs"]
    config = root / entry["target"].lstrip("/")
    config.parent.mkdir(parents=True, exist_ok=True)
    text = (compose_dir / compose["configs"][entry["source"]]["file"]).read_text()
    config.write_text(text.replace('"/run/secrets/', f'"{root}/run/secrets/'))
    return config


def test_the_gateway_loads_its_mounted_config_and_secrets(compose, compose_dir, tmp_path):
    config = _mounted(compose, compose_dir, "gateway", tmp_path)
    assert config_kind(config) == "gateway"
    settings = load_gateway_settings(config, env={})
    assert settings.database_url.startswith("postgresql://federation:")
    assert settings.database_url.endswith("@postgres:5432/federation")
    password = (compose_dir / "secrets/postgres_password").read_text()
    assert f":{password}@" in settings.database_url and len(password) >= 24
    TlsMaterial.load(settings.tls.cert, settings.tls.key, settings.tls.ca)
    assert {s.id for s in settings.sites} >= {"city-1", "county-b", "township-a1"}


def test_each_node_has_its_own_certificate_and_existing_sources(compose, compose_dir, tmp_path):
    data = tmp_path / "sitedata"
    generate_consortium(data / "consortium", seed=3, people=10)
    for service in [n for n in compose["services"] if n.startswith("node-")]:
        root = tmp_path / service
        config = _mounted(compose, compose_dir, service, root)
        assert config_kind(config) == "node"
        settings = load_node_settings(config, env={})
        material = TlsMaterial.load(settings.tls.cert, settings.tls.key, settings.tls.ca)
        assert identity_from_pem(material.cert_pem).site_id == settings.site_id == \
            service.removeprefix("node-")
        assert settings.advertise == f"{service}:50061"
        for source in (settings.source, *settings.source.extra):
            local = Path(str(source.path).replace("/srv/sites", str(data)))
            assert local.exists(), (service, source.path)
