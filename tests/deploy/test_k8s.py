"""deploy/k8s rendered offline (kubectl's kustomize, or kustomize_lite where there is no
kubectl), every object validated against the Kubernetes 1.30 OpenAPI schemas bundled in
``kubernetes-validate`` (strict: unknown fields fail), the CloudNativePG Cluster checked
for the structure the operator requires, and the wiring checked: the config the pods
mount loads with the gateway's own settings loader and the CA material they mount is a
certificate chain our TLS loader accepts."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from federation.security.tls import TlsMaterial
from federation.settings import load_gateway_settings
from tests.deploy import kustomize_lite

K8S_VERSION = "1.30"
OVERLAYS = ("cnpg", "external-db")
KUBECTL = shutil.which("kubectl")
_HASH = re.compile(r"-[a-z0-9]{10}$")


def _kubectl(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render(folder: Path) -> list[dict[str, Any]]:
    return _kubectl(folder) if KUBECTL else kustomize_lite.render(folder)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, deploy_copy) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(deploy_copy / "k8s" / "overlays" / request.param)


def _one(docs, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and
             (name is None or _HASH.sub("", d["metadata"]["name"]) == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_every_object_is_valid_for_kubernetes(rendered):
    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            continue  # no bundled schema: see test_cloudnativepg_cluster
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 10
    assert all(d["metadata"].get("namespace") == "federation"
               for d in docs if d["kind"] != "Namespace")


def test_a_broken_manifest_is_caught_by_the_validator(rendered):
    _, docs = rendered
    bad = yaml.safe_load(yaml.safe_dump(_one(docs, "Deployment", "federation-gateway")))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = yaml.safe_load(yaml.safe_dump(_one(docs, "Deployment", "federation-gateway")))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_gateway_runs_replicated_non_root_with_both_probes(rendered):
    _, docs = rendered
    dep = _one(docs, "Deployment", "federation-gateway")
    pod = dep["spec"]["template"]["spec"]
    (gw,) = pod["containers"]
    assert dep["spec"]["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert gw["securityContext"]["readOnlyRootFilesystem"] is True
    assert gw["securityContext"]["allowPrivilegeEscalation"] is False
    assert gw["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert gw["livenessProbe"]["exec"]["command"][:2] == ["federation", "health"]
    assert "--grpc-only" in gw["livenessProbe"]["exec"]["command"]
    assert gw["args"][:2] == ["gateway", "serve"]
    assert gw["image"] == "registry.example.org/federation/federation:0.1.0"
    labels = pod and dep["spec"]["template"]["metadata"]["labels"]
    pdb = _one(docs, "PodDisruptionBudget", "federation-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] >= 1
    hpa = _one(docs, "HorizontalPodAutoscaler", "federation-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "federation-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2 and gw["resources"]["requests"]["cpu"]


def test_only_nodes_reach_the_grpc_port(rendered):
    overlay, docs = rendered
    policy = _one(docs, "NetworkPolicy", "federation-gateway-ingress")
    labels = _one(docs, "Deployment", "federation-gateway")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 50051)
    sources = grpc_rule["from"]
    blocks = [s["ipBlock"]["cidr"] for s in sources if "ipBlock" in s]
    pods = [s["podSelector"]["matchLabels"] for s in sources if "podSelector" in s]
    assert blocks and "192.0.2.0/24" not in blocks          # the overlay set the sites' ranges
    assert "0.0.0.0/0" not in blocks
    assert pods == [{"app.kubernetes.io/name": "federation", "app.kubernetes.io/component": "node"}]
    assert not any("namespaceSelector" in s for s in sources)
    http_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8080)
    assert all("namespaceSelector" in s for s in http_rule["from"])


def test_migrations_run_as_a_job_with_the_same_config(rendered):
    _, docs = rendered
    job = _one(docs, "Job", "federation-migrate")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["db", "upgrade"]
    dep = _one(docs, "Deployment", "federation-gateway")
    vol = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    jvol = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert jvol["config"] == vol["config"] and jvol["database"] == vol["database"]


def test_the_pods_mounts_make_a_config_the_gateway_loads(rendered, tmp_path):
    """Lay out every mount of the gateway container as the kubelet would, then load it."""
    overlay, docs = rendered
    dep = _one(docs, "Deployment", "federation-gateway")
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for mount in pod["containers"][0]["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = tmp_path / mount["mountPath"].lstrip("/")
        if "emptyDir" in volume:
            continue
        if "configMap" in volume:
            data = by_name[("ConfigMap", volume["configMap"]["name"])]["data"]
            files = {k: v.encode() for k, v in data.items()}
        else:
            secret = volume["secret"]
            if overlay == "cnpg" and secret["secretName"] == "federation-db-app":
                # written by the CloudNativePG operator: keys user, password, host, uri …
                files = {"uri": b"postgresql://federation:pw@federation-db-rw.federation:5432/federation"}
            else:
                data = by_name[("Secret", secret["secretName"])]["data"]
                files = {k: base64.b64decode(v) for k, v in data.items()}
        items = volume.get("configMap", volume.get("secret", {})).get("items")
        if items:
            files = {i["path"]: files[i["key"]] for i in items}
        if "subPath" in mount:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[mount["subPath"]])
        else:
            target.mkdir(parents=True, exist_ok=True)
            for key, content in files.items():
                (target / key).write_bytes(content)
    config = tmp_path / "etc/federation/federation.toml"
    config.write_text(config.read_text().replace("/etc/federation/", f"{tmp_path}/etc/federation/"))
    settings = load_gateway_settings(config, env={})
    assert settings.grpc_listen == "0.0.0.0:50051" and settings.log_format == "json"
    assert settings.database_url.startswith("postgresql://federation:pw@")
    material = TlsMaterial.load(settings.tls.cert, settings.tls.key, settings.tls.ca)
    assert b"BEGIN CERTIFICATE" in material.cert_pem
    assert settings.tls.crl.read_bytes().startswith(b"-----BEGIN X509 CRL")


def test_cloudnativepg_cluster(deploy_copy):
    docs = render(deploy_copy / "k8s" / "overlays" / "cnpg")
    cluster = _one(docs, "Cluster", "federation-db")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    known = {"instances", "imageName", "primaryUpdateStrategy", "enableSuperuserAccess",
             "bootstrap", "postgresql", "storage", "walStorage", "resources", "affinity",
             "monitoring", "backup"}
    assert set(spec) <= known, set(spec) - known
    assert spec["instances"] >= 3
    assert spec["bootstrap"]["initdb"] == {"database": "federation", "owner": "federation"}
    assert re.fullmatch(r"\d+Gi", spec["storage"]["size"])
    assert all(isinstance(v, str) for v in spec["postgresql"]["parameters"].values())
    # 6 replicas x (pool 10 + overflow 20) must fit max_connections
    hpa = _one(docs, "HorizontalPodAutoscaler", "federation-gateway")
    assert int(spec["postgresql"]["parameters"]["max_connections"]) >= \
        hpa["spec"]["maxReplicas"] * 30 + 20
    # the app secret the operator writes is <cluster>-app, and the pods mount it
    dep = _one(docs, "Deployment", "federation-gateway")
    db = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "database")
    assert db["secret"]["secretName"] == f"{cluster['metadata']['name']}-app"
    assert db["secret"]["items"] == [{"key": "uri", "path": "database_url"}]


def test_every_reference_resolves(rendered):
    overlay, docs = rendered
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    operator_made = {("Secret", "federation-db-app")} if overlay == "cnpg" else set()
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert ("ServiceAccount", pod["serviceAccountName"]) in names
        for v in pod["volumes"]:
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, v
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in names | operator_made, v


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl here to compare kustomize_lite with")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_lite_renders_what_kubectl_renders(deploy_copy, overlay):
    folder = deploy_copy / "k8s" / "overlays" / overlay

    def keyed(docs):
        out = {}
        for d in docs:
            d = yaml.safe_load(yaml.safe_dump(d))
            d["metadata"]["name"] = _HASH.sub("", d["metadata"]["name"]) \
                if d["kind"] in ("ConfigMap", "Secret") else d["metadata"]["name"]
            if d["kind"] == "Secret":  # kubectl wraps base64 at 76 columns
                d["data"] = {k: base64.b64decode(v) for k, v in d["data"].items()}
            for c in ("Deployment", "Job"):
                if d["kind"] == c:
                    for v in d["spec"]["template"]["spec"]["volumes"]:
                        if "configMap" in v:
                            v["configMap"]["name"] = _HASH.sub("", v["configMap"]["name"])
                        if "secret" in v:
                            v["secret"]["secretName"] = _HASH.sub("", v["secret"]["secretName"])
            out[(d["kind"], d["metadata"]["name"])] = d
        return out

    assert keyed(kustomize_lite.render(folder)) == keyed(_kubectl(folder))
