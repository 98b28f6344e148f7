"""``federation terminology …``: normalise a diagnosis, translate a code.

Registered by the main CLI with ``cli.add_command(terminology)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from federation._cli_util import friendly
from federation.terminology.condition import to_condition
from federation.terminology.normalise import normalise_diagnosis
from federation.terminology.translate import Terminology, to_parameters

__all__ = ["terminology"]


def _print(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


@click.group()
def terminology() -> None:
    """Terminology service (术语服务): local codes → standard codes, free-text diagnoses."""


@terminology.command("normalize")
@click.argument("text")
@click.option("--subject", default=None, help="Reference for Condition.subject, e.g. Patient/123.")
@click.option("--site", "site_id", default=None, help="Site id written to meta.source.")
@friendly
def normalize(text: str, subject: str | None, site_id: str | None) -> None:
    """Print the FHIR Condition for a free-text Chinese diagnosis TEXT."""
    _print(to_condition(normalise_diagnosis(text), subject_ref=subject, site_id=site_id))


@terminology.command("translate")
@click.option("--system", required=True, help="Source code system URI.")
@click.option("--code", required=True, help="The code to translate.")
@click.option("--target", default=None, help="Target code system URI (optional).")
@click.option("--reverse", is_flag=True, help="Translate from target back to source.")
@click.option("--map", "extra", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="An extra ConceptMap JSON file (repeatable).")
@friendly
def translate(system: str, code: str, target: str | None, reverse: bool,
              extra: tuple[Path, ...]) -> None:
    """Print the FHIR Parameters of ConceptMap $translate for SYSTEM|CODE."""
    result = Terminology.default(extra).translate(system, code, target, reverse=reverse)
    _print(to_parameters(result))
