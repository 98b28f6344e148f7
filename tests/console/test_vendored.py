"""The console's vendored front-end files are exactly what ``scripts/vendor_static.py``
fetched from the npm registry (no hand edits), are shipped in the package, and are the
only scripts a page loads from anywhere."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from federation.console.web import STATIC

VENDOR = STATIC / "vendor"
TEMPLATES = STATIC.parent / "templates"


def test_every_vendored_file_matches_its_record() -> None:
    records = json.loads((VENDOR / "VENDORED.json").read_text())
    assert {r["package"] for r in records} >= {"htmx.org", "echarts"}
    for record in records:
        data = (VENDOR / record["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"], record["file"]
        assert record["version"] in data.decode("utf-8", "replace")[:200_000] or \
            record["package"] == "echarts", record  # htmx states its version in the file
    listed = {r["file"] for r in records} | {"VENDORED.json"}
    assert {p.name for p in VENDOR.iterdir()} == listed, "a vendor file without a record"


def test_pages_load_scripts_only_from_the_package() -> None:
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text(encoding="utf-8")
        for src in re.findall(r"<script[^>]*\\bsrc=\"([^\"]+)\"", text):
            assert src.startswith("/console/static/"), (template.name, src)
        # code system URIs (http://loinc.org …) are names, not addresses: only what a
        # page would fetch counts
        fetched = re.findall(r"\b(?:src|href|hx-get|hx-post|action)=\"(https?:)?//", text)
        assert not fetched, (template.name, fetched)


def test_the_package_ships_templates_and_static_files() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml")
                            .read_text())
    data = project["tool"]["setuptools"]["package-data"]["federation.console"]
    assert "templates/**/*.html" in data and "static/**/*" in data
