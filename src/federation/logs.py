"""Logging set-up for the CLI's long-running commands: plain text, or one JSON object a line.

Log lines carry ids, codes and hashes only — never names, ID numbers or phones; the
modules that log are written to that rule and the tests check the demo's logs for it.
``log_format = "json"`` (``FEDERATION_LOG_FORMAT=json``) writes one JSON object per
line for a log collector (Loki, Elasticsearch, Cloud Logging): ``ts`` (RFC 3339 UTC),
``level``, ``component``, ``logger``, ``message``, and ``error`` for an exception — its
type and frames as :func:`describe_exception` gives them, never its message or locals,
which may quote the patient data a parser choked on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback

from federation.settings import LOG_FORMATS

__all__ = ["LOG_FORMATS", "QUIET_LOGGERS", "JsonFormatter", "configure_logging",
           "describe_exception"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record; exceptions reduced to type and frames."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "component": self._component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = describe_exception(record.exc_info[1])
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    """The plain format, with exceptions reduced like the JSON one."""

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def, override]
        return "  " + describe_exception(ei[1]) if ei and ei[1] is not None else ""


#: loggers kept to warnings: access lines and client request lines carry URLs, and a URL
#: may carry a search (the console's in-process API client asks ``/fhir/Patient?name=…``)
QUIET_LOGGERS = ("uvicorn.access", "sqlalchemy.engine", "httpx", "httpcore")


def configure_logging(level: str = "INFO", *, component: str = "federation",
                      fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(_TextFormatter(
            f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def describe_exception(exc: BaseException) -> str:
    """Where an unexpected error happened, without its message.

    Messages of third-party errors (pydantic, database drivers) may quote the values
    they choked on — patient data — so logs get the type and the frames only.
    """
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                        for f in reversed(frames))
    return f"{type(exc).__name__} at {where or 'unknown location'}"
