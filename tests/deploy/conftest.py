"""Deployment-file fixtures: a copy of ``deploy/`` with real CA material from a test CA."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from federation.security.ca import init_ca

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ copied, each Kubernetes overlay given pki/ (a real CA, gateway cert, CRL)
    and the external overlay its database-url, as an operator would before applying."""
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, root)
    ca = init_ca(root.parent / "ca", consortium="Deploy Test Consortium")
    gateway = ca.issue_gateway(root.parent / "gateway")
    for overlay in ("cnpg", "external-db"):
        pki = root / "k8s" / "overlays" / overlay / "pki"
        pki.mkdir()
        shutil.copy(ca.cert_path, pki / "ca.crt")
        shutil.copy(ca.crl_path, pki / "crl.pem")
        shutil.copy(gateway.cert_path, pki / "gateway.crt")
        shutil.copy(gateway.key_path, pki / "gateway.key")
    (root / "k8s" / "overlays" / "external-db" / "database-url").write_text(
        "postgresql://federation:pw@db.example.org:5432/federation?sslmode=verify-full\n")
    return root
