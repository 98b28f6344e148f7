"""A minimal kustomize for the tests, used where no ``kubectl``/``kustomize`` binary is.

It implements exactly what ``deploy/k8s`` uses — resources (files and folders),
``namespace``, ``labels`` (metadata only), config map and secret generators from files
with a content-hash name suffix, name references from pod specs to generated objects,
``images``, and JSON 6902 ``patches`` (add / replace / remove) with a kind+name target —
and refuses any other field, so a kustomization that outgrows it fails loudly instead
of rendering wrongly. ``test_k8s.py`` checks it against ``kubectl kustomize`` wherever
both run (hash suffixes aside: kustomize's own hash is not reproduced here).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["render"]

_KNOWN = {"apiVersion", "kind", "namespace", "labels", "resources", "configMapGenerator",
          "secretGenerator", "images", "patches"}
_POD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}


def render(folder: Path) -> list[dict[str, Any]]:
    docs, renames = _build(Path(folder))
    for doc in docs:
        if doc["kind"] in _POD_KINDS:
            _rename_refs(doc["spec"]["template"]["spec"], renames)
    return docs


def _build(folder: Path) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - _KNOWN
    if unknown:
        raise NotImplementedError(f"kustomize_lite does not know {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    renames: dict[tuple[str, str], str] = {}
    for ref in k.get("resources", []):
        path = folder / ref
        if path.is_dir():
            sub, sub_renames = _build(path)
            docs += sub
            renames |= sub_renames
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in k.get(key, []):
            doc = _generate(folder, kind, gen)
            renames[(kind, gen["name"])] = doc["metadata"]["name"]
            docs.append(doc)
    for patch in k.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load(patch["patch"])
        for doc in docs:
            if doc["kind"] == target["kind"] and doc["metadata"]["name"] == target["name"]:
                for op in ops:
                    _apply(doc, op)
    for image in k.get("images", []):
        for doc in docs:
            if doc["kind"] in _POD_KINDS:
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    if c["image"].split(":")[0] == image["name"]:
                        c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if "namespace" in k and doc["kind"] != "Namespace":
            meta["namespace"] = k["namespace"]
        for entry in k.get("labels", []):
            meta.setdefault("labels", {}).update(entry["pairs"])
    return docs, renames


def _generate(folder: Path, kind: str, gen: dict[str, Any]) -> dict[str, Any]:
    data = {}
    for item in gen["files"]:
        key, _, rel = item.partition("=")
        raw = (folder / rel).read_bytes()
        data[key] = base64.b64encode(raw).decode() if kind == "Secret" else raw.decode()
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "data": data}
    if kind == "Secret":
        doc["type"] = "Opaque"
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]
    doc["metadata"] = {"name": f"{gen['name']}-{digest}"}
    return doc


def _rename_refs(pod: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            cm = volume["configMap"]
            cm["name"] = renames.get(("ConfigMap", cm["name"]), cm["name"])
        if "secret" in volume:
            s = volume["secret"]
            s["secretName"] = renames.get(("Secret", s["secretName"]), s["secretName"])


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def _apply(doc: dict[str, Any], op: dict[str, Any]) -> None:
    parent, last = _pointer(doc, op["path"])
    value = copy.deepcopy(op.get("value"))
    if op["op"] == "replace":
        if isinstance(parent, list):
            parent[int(last)] = value
        else:
            if last not in parent:
                raise KeyError(f"replace of a missing {op['path']}")
            parent[last] = value
    elif op["op"] == "add":
        if isinstance(parent, list):
            parent.append(value) if last == "-" else parent.insert(int(last), value)
        else:
            parent[last] = value
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise NotImplementedError(f"JSON patch op {op['op']!r}")
