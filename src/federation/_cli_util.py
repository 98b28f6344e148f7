"""Shared by every ``federation`` command group."""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from federation.errors import ConfigError, FederationError, InvalidInput
from federation.security.tls import TlsMaterial

__all__ = ["friendly", "person_credentials", "local_time"]


def person_credentials(folder: Path) -> TlsMaterial:
    """A member of staff's certificate folder, as ``federation ca issue --person`` wrote it."""
    certs = [p for p in folder.glob("*.crt") if p.name != "ca.crt"]
    if len(certs) != 1 or not certs[0].with_suffix(".key").exists() or not (
            folder / "ca.crt").exists():
        raise ConfigError(f"{folder} must hold one <name>.crt with its <name>.key and ca.crt "
                          "(as `federation ca issue --person` writes them)")
    return TlsMaterial.load(certs[0], certs[0].with_suffix(".key"), folder / "ca.crt")


def local_time(value: str | None, what: str) -> dt.datetime | None:
    """A date-time typed by a person: local time unless it names its zone."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        raise InvalidInput(f"{what} must look like 2026-12-01T09:30 (local time) or "
                           f"2026-12-01T09:30+08:00, got {value!r}") from None
    return parsed.astimezone() if parsed.tzinfo is None else parsed


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show a federation error as one plain sentence (exit code 2), not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FederationError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            sys.exit(2)

    return wrapper
