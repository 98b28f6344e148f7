"""deploy/Dockerfile checked offline (no Docker engine runs here, so the image is not
built by these tests): multi-stage, a non-root runtime user, a HEALTHCHECK, nothing
secret copied in, and every command the image, compose and Kubernetes run exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from federation.cli import cli

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins, args in instructions(DOCKERFILE.read_text()):
        if ins == "FROM":
            result.append([])
        if result:
            result[-1].append((ins, args))
    return result


def test_it_is_multi_stage_and_the_runtime_takes_only_the_built_venv(stages):
    assert len(stages) >= 2
    names = [re.search(r"\bAS\s+(\S+)", s[0][1], re.I).group(1) for s in stages]
    assert names[-1] == "runtime"
    runtime = stages[-1]
    copies = [a for i, a in runtime if i == "COPY"]
    assert copies and all(a.startswith("--from=build ") for a in copies)
    assert not any(i == "RUN" and "build-essential" in a for i, a in runtime)


def test_the_runtime_user_is_not_root(stages):
    users = [a for i, a in stages[-1] if i == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000


def test_it_has_a_healthcheck_that_runs_federation_health(stages):
    (check,) = [a for i, a in stages[-1] if i == "HEALTHCHECK"]
    assert "CMD" in check and '"federation", "health"' in check
    assert re.search(r"--interval=\d+s", check) and re.search(r"--timeout=\d+s", check)


def test_nothing_secret_goes_into_the_image(stages):
    secret = re.compile(r"(\.key\b|\.pem\b|\.crt\b|pki|secret|\.env\b|password)", re.I)
    for stage in stages:
        for ins, args in stage:
            if ins in ("COPY", "ADD"):
                assert not secret.search(args), args
            if ins in ("ENV", "ARG"):
                assert not re.search(r"(PASSWORD|SECRET|TOKEN|DATABASE_URL)", args), args
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[0 if not ignore[0].startswith("#") else
                  next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*"
    assert {"**/*.key", "**/*.pem"} <= set(ignore)


def _commands() -> list[list[str]]:
    """Every federation command line the image, compose and Kubernetes run."""
    found = []
    for ins, args in instructions(DOCKERFILE.read_text()):
        if ins in ("CMD", "HEALTHCHECK"):
            argv = yaml.safe_load(args[args.index("["):])
            found.append(argv[1:] if argv[0] == "federation" else argv)
    compose = yaml.safe_load((REPO / "deploy/compose/compose.yaml").read_text())
    for service in compose["services"].values():
        if "command" in service and "image" in service and "postgres" not in service["image"]:
            found.append(service["command"])
    for path in (REPO / "deploy/k8s/base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "Job"):
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    found.append(c["args"])
                    probe = c.get("livenessProbe", {}).get("exec", {}).get("command")
                    if probe:
                        found.append(probe[1:])
    return found


def test_every_command_it_runs_exists():
    commands = _commands()
    assert len(commands) >= 8
    runner = CliRunner()
    for argv in commands:
        path = [a for a in argv if not a.startswith("-")][:2]
        group = cli.get_command(None, path[0])            # type: ignore[arg-type]
        assert group is not None, argv
        if hasattr(group, "get_command"):
            command = group.get_command(None, path[1])  # type: ignore[arg-type]
        else:
            command, path = group, path[:1]
        assert command is not None, argv
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        for arg in argv:
            if arg.startswith("--"):
                assert arg in options, (argv, arg)
        assert runner.invoke(cli, [*path, "--help"]).exit_code == 0, argv
