"""Splink 4 (DuckDB backend) on a demographics CSV: the peer of `federation identity link`.

    python bench/_splink_peer.py INPUT.csv --out OUTPUT.csv [--link-only] [--threshold 0.9]

Reads the batch CLI's input columns, preprocesses every record with this project's
``federation.identity.features.extract`` (the same normalisation our EMPI gets: names as
pinyin/Latin letters, traditional → simplified, resident IDs validated and upgraded to 18
digits, phones as digits, ISO birth dates, address tokens, postcodes), then runs the
standard Splink workflow and writes ``record_id,person_id`` (Splink's cluster id).

The model is what a competent Splink user writes for person data (the Splink FEBRL
tutorials, adapted to the columns we have):

* comparisons — ``ForenameSurnameComparison`` on given/family letters (Jaro-Winkler
  0.92/0.88, a *columns reversed* level for 'Wei Zhang' vs 'ZHANG Wei', term frequencies
  on the full name); ``DateOfBirthComparison`` (exact, Damerau-Levenshtein 1, 1 month,
  1 year, 10 years); resident ID exact; other ID Damerau-Levenshtein 1/2; phone exact
  with term frequencies (households share phones); sex exact; postcode
  Damerau-Levenshtein 1; address token-set Jaccard ≥ 0.6 / ≥ 0.3 (exact string first).
  A column that is blank in (almost) every record is left out: nothing can be learnt
  from it;
* blocking for prediction — several rules, not one key: resident ID; other ID; phone;
  the order-free name key (sorted letters of the name); birth date; family + given;
  postcode + given; postcode + family + birth year — each only where its columns
  exist;
* u by random sampling (5 M pairs); m by EM over two blocking rules (birth date, then
  family + given name, as Splink's tutorials do), so every comparison is trained in at
  least one session (EM blocked on the order-free name key instead settles on
  households — same phone, address and family name — as its "match" class); λ by
  ``estimate_probability_two_random_records_match`` with deterministic rules (ID
  equality, or exact name + birth date) at recall 0.8;
* ``predict`` (pairs at ≥ half the clustering threshold kept), then
  ``cluster_pairwise_predictions_at_threshold`` at match probability 0.9 (``--threshold``),
  the value of Splink's own tutorials.

``--link-only`` makes it a ``link_only`` job between the values of the ``site`` column
(FEBRL4's A and B: each file is known to have no duplicates). Records the model never
clusters come out as their own person.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from federation.identity.features import extract

_COLUMNS = ("unique_id", "source_dataset", "given", "family", "full_name", "name_key",
            "dob", "birth_year", "sex", "national_id", "other_id", "phone", "postcode",
            "address", "address_tokens")


def preprocess(input_csv: Path, out_csv: Path) -> dict[str, int]:
    """Write the Splink input table; return the non-blank count per column."""
    filled = dict.fromkeys(_COLUMNS, 0)
    with open(input_csv, encoding="utf-8", newline="") as fh, \
            open(out_csv, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_COLUMNS)
        for row in csv.DictReader(fh):
            f = extract(row)
            family, given = f.splits[0] if f.splits else (None, None)
            full = " ".join(p for p in (given, family) if p) or None
            values = (f.record_id, f.site or "all", given, family, full, f.name_key,
                      f.birth_date.isoformat() if f.birth_date else None,
                      str(f.birth_date.year) if f.birth_date else None, f.sex,
                      f.national_id, f.other_id, f.phone, f.postcode, f.address,
                      "|".join(sorted(f.address_tokens)) or None)
            for column, value in zip(_COLUMNS, values, strict=True):
                filled[column] += value is not None
            writer.writerow(["" if v is None else v for v in values])
    return filled


def settings(filled: dict[str, int], total: int, link_only: bool) -> SettingsCreator:
    def has(*columns: str) -> bool:
        return all(filled[c] >= 0.01 * total for c in columns)

    comparisons = [cl.ForenameSurnameComparison(
        "given", "family", forename_surname_concat_col_name="full_name")]
    if has("dob"):
        comparisons.append(cl.DateOfBirthComparison(
            "dob", input_is_string=True, datetime_format="%Y-%m-%d"))
    if has("national_id"):
        comparisons.append(cl.ExactMatch("national_id"))
    if has("other_id"):
        comparisons.append(cl.DamerauLevenshteinAtThresholds("other_id", [1, 2]))
    if has("phone"):
        comparisons.append(cl.ExactMatch("phone").configure(term_frequency_adjustments=True))
    if has("sex"):
        comparisons.append(cl.ExactMatch("sex"))
    if has("postcode"):
        comparisons.append(cl.DamerauLevenshteinAtThresholds("postcode", [1]))
    if has("address"):
        comparisons.append(_address_comparison())
    rules = [block_on(*cols) for cols in (
        ("national_id",), ("other_id",), ("phone",), ("name_key",), ("dob",),
        ("family", "given"), ("postcode", "given"), ("postcode", "family", "birth_year"),
    ) if has(*cols)]
    return SettingsCreator(
        link_type="link_only" if link_only else "dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=rules,
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def _address_comparison() -> cl.CustomComparison:
    inter = "len(list_intersect(address_tokens_l, address_tokens_r))"
    union = "len(list_distinct(list_concat(address_tokens_l, address_tokens_r)))"
    return cl.CustomComparison(
        output_column_name="address",
        comparison_levels=[
            cll.NullLevel("address_tokens"),
            cll.ExactMatchLevel("address"),
            cll.CustomLevel(f"{inter} >= 0.6 * {union}", "address token Jaccard >= 0.6"),
            cll.CustomLevel(f"{inter} >= 0.3 * {union}", "address token Jaccard >= 0.3"),
            cll.ElseLevel(),
        ],
    )


def run(input_csv: Path, out_csv: Path, *, link_only: bool, threshold: float,
        max_pairs: float) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="splink-peer-") as tmp:
        prepared = Path(tmp) / "prepared.csv"
        filled = preprocess(input_csv, prepared)
        total = filled["unique_id"]
        print(f"preprocessed {total} records in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        con = duckdb.connect()
        con.execute(
            "CREATE TABLE records AS SELECT * EXCLUDE (address_tokens), "
            "string_split(address_tokens, '|') AS address_tokens "
            f"FROM read_csv('{prepared}', header=true, all_varchar=true)")
        db_api = DuckDBAPI(connection=con)
        sites = [r[0] for r in con.execute(
            "SELECT DISTINCT source_dataset FROM records ORDER BY 1").fetchall()]
        if link_only and len(sites) >= 2:
            tables = []
            for i, site in enumerate(sites):
                con.execute(f"CREATE TABLE site_{i} AS SELECT * FROM records "
                            "WHERE source_dataset = ?", [site])
                tables.append(f"site_{i}")
            linker = Linker(tables, settings(filled, total, True), db_api,
                            input_table_aliases=sites)
        else:
            linker = Linker("records", settings(filled, total, False), db_api)
        train(linker, filled, total, max_pairs)
        predictions = linker.inference.predict(threshold_match_probability=threshold / 2)
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold_match_probability=threshold)
        con.execute(
            f"COPY (SELECT unique_id AS record_id, cluster_id AS person_id "
            f"FROM {clusters.physical_name} ORDER BY unique_id) "
            f"TO '{out_csv}' (HEADER, DELIMITER ',')")
    print(f"splink done in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def train(linker: Linker, filled: dict[str, int], total: int, max_pairs: float) -> None:
    def has(column: str) -> bool:
        return filled[column] >= 0.01 * total

    deterministic = [f"l.{c} = r.{c}" for c in ("national_id", "other_id") if has(c)]
    deterministic.append(block_on("name_key", "dob"))
    started = time.perf_counter()
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.8)
    _stage("lambda", started)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=1)
    _stage("u by random sampling", started)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("family", "given"))
    _stage("m by EM", started)


def _stage(what: str, started: float) -> None:
    print(f"-- {what} done at {time.perf_counter() - started:.1f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--link-only", action="store_true",
                        help="link_only between the site column's values (no dedupe)")
    parser.add_argument("--threshold", type=float, default=0.9,
                        help="clustering match probability (default 0.9)")
    parser.add_argument("--max-pairs", type=float, default=5e6,
                        help="pairs sampled to estimate u (default 5e6)")
    args = parser.parse_args(argv)
    logging.getLogger("splink").setLevel(logging.WARNING)
    run(args.input, args.out, link_only=args.link_only, threshold=args.threshold,
        max_pairs=args.max_pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
