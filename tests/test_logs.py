"""Log helpers keep patient data out of log lines."""

from __future__ import annotations

import json
import logging

import pytest


def test_exception_summaries_leave_the_message_out():
    from federation.logs import describe_exception

    def parse(value: str) -> None:
        raise ValueError(f"invalid resident id {value}")

    try:
        parse("110101199003074578")
    except ValueError as exc:
        summary = describe_exception(exc)
    assert "110101199003074578" not in summary
    assert summary.startswith("ValueError at test_logs.py:") and "parse" in summary


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_json_logs_are_one_object_a_line_without_exception_messages(
        restore_root_logging, capsys, pki, consortium, tmp_path):
    from federation.gateway.app import start_gateway
    from federation.logs import configure_logging
    from tests.conftest import gateway_settings

    configure_logging("INFO", component="gateway", fmt="json")
    gw = await start_gateway(gateway_settings(pki, f"sqlite:///{tmp_path}/g.db", consortium))
    await gw.stop(0.1)
    try:
        raise ValueError("resident id 110101199003074578 is malformed")
    except ValueError:
        logging.getLogger("federation.test").exception("parsing failed for record r-17")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]           # every line is one JSON object
    assert {"ts", "level", "component", "logger", "message"} <= set(entries[0])
    assert any(e["message"].startswith("gateway serving gRPC") for e in entries)
    assert all(e["component"] == "gateway" and e["ts"].endswith("Z") for e in entries)
    failed = entries[-1]
    assert failed["level"] == "ERROR" and failed["message"] == "parsing failed for record r-17"
    assert failed["error"].startswith("ValueError at test_logs.py:")
    assert "110101199003074578" not in "\n".join(lines)


def test_text_logs_reduce_exceptions_too(restore_root_logging, capsys):
    from federation.logs import configure_logging

    configure_logging("INFO", component="node:county-a")
    try:
        raise KeyError("phone 13800138000")
    except KeyError:
        logging.getLogger("federation.test").exception("lookup failed")
    err = capsys.readouterr().err
    assert "node:county-a federation.test: lookup failed" in err
    assert "KeyError at test_logs.py:" in err and "13800138000" not in err


def test_log_format_is_a_setting_with_an_environment_override(tmp_path):
    from federation.errors import ConfigError
    from federation.settings import load_gateway_settings

    config = tmp_path / "gateway.toml"
    config.write_text('log_format = "json"\n[tls]\ncert = "c"\nkey = "k"\nca = "a"\n')
    assert load_gateway_settings(config, env={}).log_format == "json"
    env = {"FEDERATION_LOG_FORMAT": "TEXT"}
    assert load_gateway_settings(config, env=env).log_format == "text"
    with pytest.raises(ConfigError, match="FEDERATION_LOG_FORMAT.*text, json"):
        load_gateway_settings(config, env={"FEDERATION_LOG_FORMAT": "xml"})
