"""``federation identity …``: the EMPI's batch linker, review queue and administration."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from federation._cli_util import friendly

__all__ = ["identity"]


@click.group()
def identity() -> None:
    """Master patient index: link records to persons, review, merge, split, tune."""


@identity.command("link")
@click.argument("input_csv", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out_csv", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="Where to write record_id,person_id.")
@click.option("--review", "review_csv", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the pairs that need a person's review.")
@click.option("--model", "model_path", type=click.Path(path_type=Path, exists=True),
              help="Use this linkage model (JSON) instead of estimating one from the input.")
@click.option("--save-model", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the model estimated from the input here.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="The input's character encoding (e.g. gb18030 for GBK exports).")
@click.option("--workers", type=int, help="Processes comparing pairs (default: 2 or CPUs).")
@friendly
def link(input_csv: Path, out_csv: Path, review_csv: Path | None, model_path: Path | None,
         save_model: Path | None, encoding: str, workers: int | None) -> None:
    """Link the records of INPUT_CSV into persons (bulk; estimates weights from the data).

    INPUT_CSV has a header with record_id and any of site, name, family_name, given_name,
    sex, birth_date, national_id, other_id, phone, address, postcode. Every record gets
    a person id; rows that cannot be trusted are kept as their own person and listed.
    """
    from federation.identity.bulk import link_csv
    from federation.identity.model import LinkageModel

    started = time.perf_counter()
    model = LinkageModel.load(model_path) if model_path else None
    result = link_csv(input_csv, out_csv, model=model, review_path=review_csv,
                      encoding=encoding, workers=workers)
    for p in result.row_problems[:20]:
        click.echo(f"line {p.line}: {p.message}", err=True)
    if len(result.row_problems) > 20:
        click.echo(f"… and {len(result.row_problems) - 20} more rows with problems", err=True)
    if save_model:
        save_model.write_text(json.dumps(result.model.as_json(), indent=2, ensure_ascii=False),
                              encoding="utf-8")
    s = result.stats
    click.echo(f"{s['records']} records → {s['persons']} persons; {s['links']} links, "
               f"{s['review_pairs']} pairs for review, {s['candidate_pairs']} pairs compared "
               f"({time.perf_counter() - started:.1f} s)", err=True)
    _problems(s.get("field_problems"))


def _problems(counts: Any) -> None:
    if counts:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
        if shown:
            click.echo(f"field problems: {shown}", err=True)


def main() -> None:  # pragma: no cover - convenience for `python -m`
    identity(prog_name="federation identity")
    sys.exit(0)
