"""``federation identity …``: the EMPI's batch linker, review queue and administration."""

from __future__ import annotations

import json
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


# ------------------------------------------------------------------ on the gateway's store

_CONFIG = click.option("--config", type=click.Path(path_type=Path, exists=True),
                       help="gateway.toml (the store's database_url).")
_ACTOR = click.option("--as", "actor", required=True,
                      help="Who decides (recorded in the history), e.g. reviewer-li.")


def _store(config: Path | None) -> Any:
    from federation.identity.store import IdentityStore
    from federation.settings import load_gateway_settings
    from federation.store import make_engine, upgrade

    engine = make_engine(load_gateway_settings(config).database_url)
    upgrade(engine)
    return IdentityStore(engine)


def _ref(text: str) -> Any:
    from federation.errors import InvalidInput
    from federation.identity.index import RecordRef

    site, sep, record = text.partition("/")
    if not sep or not site or not record:
        raise InvalidInput(f"'{text}' is not SITE/RECORD_ID (e.g. county-a/5f0c…)")
    return RecordRef(site, record)


@identity.command("review")
@_CONFIG
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly
def review(config: Path | None, limit: int, as_json: bool) -> None:
    """List the open review queue: each pair with its weight and the reasons."""
    items = _store(config).review_queue(limit=limit)
    if as_json:
        click.echo(json.dumps([{
            "id": i.id, "record": str(i.record), "candidate": str(i.candidate),
            "candidate_person_id": i.candidate_person_id, "weight": i.weight,
            "reason": i.reason, "contributions": i.contributions} for i in items],
            ensure_ascii=False, indent=2))
        return
    if not items:
        click.echo("the review queue is empty")
    for i in items:
        why = ", ".join(f"{c['field']} {c['meaning']} {c['bits']:+.1f}"
                        for c in i.contributions if c["field"] != "prior")
        click.echo(f"#{i.id}  {i.record}  ?=  {i.candidate} (person {i.candidate_person_id})"
                   f"  weight {i.weight:+.1f}  [{i.reason}]\n      {why}")


@identity.command("accept")
@click.argument("review_id", type=int)
@_CONFIG
@_ACTOR
@friendly
def accept(review_id: int, config: Path | None, actor: str) -> None:
    """Same person: the record joins the candidate's person."""
    person = _store(config).accept(review_id, actor=actor)
    click.echo(f"review #{review_id} accepted: the record now belongs to person {person}")


@identity.command("reject")
@click.argument("review_id", type=int)
@_CONFIG
@_ACTOR
@friendly
def reject(review_id: int, config: Path | None, actor: str) -> None:
    """Not the same person — remembered, never undone by automatic matching."""
    _store(config).reject(review_id, actor=actor)
    click.echo(f"review #{review_id} rejected: recorded as not the same person")


@identity.command("merge")
@click.argument("keep")
@click.argument("gone")
@_CONFIG
@_ACTOR
@friendly
def merge(keep: str, gone: str, config: Path | None, actor: str) -> None:
    """Merge person GONE into person KEEP (every record moves; history kept)."""
    _store(config).merge(keep, gone, actor=actor)
    click.echo(f"person {gone} merged into {keep}")


@identity.command("link-records")
@click.argument("record_a")
@click.argument("record_b")
@_CONFIG
@_ACTOR
@friendly
def link_records(record_a: str, record_b: str, config: Path | None, actor: str) -> None:
    """Link SITE/RECORD_B to the person of SITE/RECORD_A by hand, whatever the data say."""
    person = _store(config).link_records(_ref(record_a), _ref(record_b), actor=actor)
    click.echo(f"{record_b} now belongs to person {person}")


@identity.command("split")
@click.argument("record")
@_CONFIG
@_ACTOR
@friendly
def split(record: str, config: Path | None, actor: str) -> None:
    """Split SITE/RECORD out of its person into a new person of its own."""
    person = _store(config).split(_ref(record), actor=actor)
    click.echo(f"{record} split out to new person {person}")


@identity.command("show")
@click.argument("person_id")
@_CONFIG
@friendly
def show(person_id: str, config: Path | None) -> None:
    """A person: records per site, golden demographics (masked), history."""
    from federation.identity.http_api import masked_person

    click.echo(json.dumps(masked_person(_store(config).person(person_id)),
                          ensure_ascii=False, indent=2, default=str))


@identity.command("tune")
@_CONFIG
@click.option("--upper", type=float, help="Link at or above this weight (bits).")
@click.option("--lower", type=float, help="Review at or above this weight (bits).")
@click.option("--apply", "apply_", is_flag=True,
              help="Save the re-estimated model; new arrivals are linked with it.")
@click.option("--as", "actor", default="tune", show_default=True)
@friendly
def tune(config: Path | None, upper: float | None, lower: float | None, apply_: bool,
         actor: str) -> None:
    """Re-estimate the match weights from the store's records and preview what the
    new model and thresholds would change against the current links — before applying."""
    from federation.identity.bulk import link_features
    from federation.identity.tuning import preview

    store = _store(config)
    current = store.model()
    features = store.all_features()
    if len(features) < 2:
        raise click.UsageError("the index holds fewer than two records; nothing to tune")
    fitted = link_features(features).model
    fitted.upper = current.upper if upper is None else upper
    fitted.lower = current.lower if lower is None else lower
    report = preview(features, store.decisions(), fitted)
    click.echo(json.dumps({"current": {"upper": current.upper, "lower": current.lower,
                                       "prior": current.prior},
                           "proposed": {"upper": fitted.upper, "lower": fitted.lower,
                                        "prior": fitted.prior},
                           "changes": report}, indent=2))
    if apply_:
        version = store.save_model(fitted, actor=actor, note=json.dumps(report))
        click.echo(f"applied: linkage model version {version} is now in use for new records",
                   err=True)
    else:
        click.echo("preview only; add --apply to use this model", err=True)


def _problems(counts: Any) -> None:
    if counts:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
        if shown:
            click.echo(f"field problems: {shown}", err=True)

