"""Vendor the console's front-end libraries from the npm registry into the package.

The console never loads code from the internet at run time: this script fetches each
pinned package with ``npm pack`` (the npm registry is the one place these come from),
copies the one built file the console uses into ``src/federation/console/static/vendor/``
and records name, version, file and SHA-256 in ``VENDORED.json`` there;
``tests/console/test_vendored.py`` fails when a file no longer matches its record.

    python scripts/vendor_static.py          # fetch and write
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "src" / "federation" / "console" / "static" / "vendor"

#: package, version, file inside the package tarball → file name in vendor/
PACKAGES = (
    ("htmx.org", "2.0.4", "package/dist/htmx.min.js", "htmx.min.js", "0BSD"),
    ("echarts", "5.6.0", "package/dist/echarts.min.js", "echarts.min.js", "Apache-2.0"),
)


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, member, target, licence in PACKAGES:
            packed = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"],
                                    cwd=tmp, check=True, capture_output=True, text=True)
            tarball = Path(tmp) / packed.stdout.strip().splitlines()[-1]
            with tarfile.open(tarball) as tar:
                source = tar.extractfile(member)
                if source is None:
                    print(f"{name}@{version} has no {member}", file=sys.stderr)
                    return 1
                with (VENDOR / target).open("wb") as out:
                    shutil.copyfileobj(source, out)
            digest = hashlib.sha256((VENDOR / target).read_bytes()).hexdigest()
            records.append({"package": name, "version": version, "from": member,
                            "file": target, "license": licence, "sha256": digest})
            print(f"{name}@{version} → vendor/{target} ({digest[:12]}…)")
    (VENDOR / "VENDORED.json").write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
