"""Logging set-up for the CLI's long-running commands.

Log lines carry ids, codes and hashes only — never names, ID numbers or phones; the
modules that log are written to that rule and the tests check the demo's logs for it.
"""

from __future__ import annotations

import logging
import sys
import traceback

__all__ = ["configure_logging", "describe_exception"]


def configure_logging(level: str = "INFO", *, component: str = "federation") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "sqlalchemy.engine"):
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
