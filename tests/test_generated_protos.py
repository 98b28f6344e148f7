"""The generated protobuf package is exactly what ``scripts/gen_protos.py`` makes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_is_fresh():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_notices_a_hand_edit(tmp_path):
    gen = _script()
    fresh = tmp_path / "fresh"
    gen.generate(fresh)
    assert gen._same_tree(fresh, ROOT / "src" / "federation" / "_proto") == []
    edited = fresh / "v1" / "gateway_pb2.pyi"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    assert gen._same_tree(fresh, ROOT / "src" / "federation" / "_proto") == ["v1/gateway_pb2.pyi"]


def test_every_proto_has_generated_modules_with_type_stubs():
    for proto in (ROOT / "proto" / "federation" / "v1").glob("*.proto"):
        stem = ROOT / "src" / "federation" / "_proto" / "v1" / proto.stem
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert Path(f"{stem}{suffix}").exists(), f"{proto.name}: missing {suffix}"
