"""Shared by every ``federation`` command group."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from federation.errors import FederationError

__all__ = ["friendly"]


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
