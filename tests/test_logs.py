"""Log helpers keep patient data out of log lines."""

from __future__ import annotations


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
