"""Bulk linking: a whole file of records to persons, in bounded memory.

The flow (``federation identity link INPUT.csv --out OUTPUT.csv``):

1. every row becomes :class:`~federation.identity.features.Features`; rows that cannot be
   trusted (wrong number of columns, no record id, duplicate id) and all-blank records
   are kept — each becomes its own person — but never linked;
2. blocking keys (:mod:`~federation.identity.blocking`) are hashed into two NumPy arrays
   and sorted; each block of records sharing a key yields its pairs, and a pair is
   compared only in the block of the *smallest* key the two share, so no pair is
   compared twice. Blocks larger than ``max_block`` are skipped (their key carries no
   information) and say so in the statistics;
3. the compared pairs stream, in chunks, to temporary files as (i, j, level pattern) —
   the candidate pairs are never all in memory. Two worker processes share the work;
4. the model is estimated from the data (u from value frequencies and random pairs, m
   and the prior by EM over the level patterns), unless one is given or the input has
   fewer than :data:`MIN_TRAINING_RECORDS` records (then the packaged default is used);
5. the pairs stream back: weights come from a table per pattern; pairs at or above the
   upper threshold without a guard are linked greedily, strongest first, never joining
   two clusters that hold different valid resident IDs; the rest above the lower
   threshold are review items.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from federation.errors import InvalidInput
from federation.identity.blocking import KINDS, hashed_keys, kind_mask
from federation.identity.compare import FIELDS, compare
from federation.identity.features import INPUT_COLUMNS, Features, extract
from federation.identity.model import LINK, REVIEW, LinkageModel, estimate

__all__ = ["BulkResult", "RowProblem", "link_csv", "link_features", "link_rows", "read_rows"]

_CHUNK = 200_000
#: below this many linkable records the packaged default model is used, not one estimated
MIN_TRAINING_RECORDS = 1000
_BASE = 6   # levels -1…4 shifted to 0…5
_MASKS = 1 << len(KINDS)   # a pair's code: level pattern * _MASKS + the kinds it shares


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    record_id: str
    message: str


@dataclass(slots=True)
class BulkResult:
    record_ids: list[str]
    person_of: list[int]
    model: LinkageModel
    review: list[tuple[int, int, float, tuple[str, ...]]]
    row_problems: list[RowProblem] = field(default_factory=list)
    stats: dict[str, object] = field(default_factory=dict)

    def assignments(self) -> Iterator[tuple[str, str]]:
        for rid, person in zip(self.record_ids, self.person_of):
            yield rid, f"P{person:07d}"


# ------------------------------------------------------------------------------ input

def read_rows(path: Path, *, encoding: str = "utf-8") -> Iterator[tuple[int, dict[str, str], str | None]]:
    """(line, row, problem) per data row of a CSV in :data:`INPUT_COLUMNS` (any subset).

    Raises :class:`InvalidInput` for a file that is not in ``encoding`` (naming the byte
    offset) or has no record_id column; a row with more or fewer fields than the header
    is returned with a problem, not dropped.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path} is not valid {encoding} (first bad byte at offset {exc.start}); save it "
            f"as UTF-8, or pass --encoding gb18030 if it came from a GBK system") from None
    except LookupError:
        raise InvalidInput(f"unknown encoding '{encoding}'") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise InvalidInput(f"{path} is empty; expected a header with record_id and "
                           f"any of {', '.join(INPUT_COLUMNS[1:])}")
    header = [h.strip().lower() for h in header]
    if "record_id" not in header:
        raise InvalidInput(f"{path} has no record_id column (header: {', '.join(header)})")
    unknown = [h for h in header if h not in INPUT_COLUMNS]
    if unknown:
        print(f"note: ignoring unknown columns {', '.join(unknown)}", file=sys.stderr)
    rid_at = header.index("record_id")
    for values in reader:
        line = reader.line_num
        if not values:
            continue
        problem = None
        if len(values) != len(header):
            problem = (f"{len(values)} fields where the header has {len(header)}; "
                       f"kept as its own person, not linked")
            values = (values + [""] * len(header))[:len(header)]
        row = dict(zip(header, values))
        rid = values[rid_at].strip()
        if not rid:
            problem = problem or "no record_id; kept as its own person, not linked"
        yield line, row, problem


# ------------------------------------------------------------------------------ linking

def link_csv(in_path: Path, out_path: Path, *, model: LinkageModel | None = None,
             review_path: Path | None = None, encoding: str = "utf-8",
             workers: int | None = None) -> BulkResult:
    rows = list(read_rows(in_path, encoding=encoding))
    result = link_rows(((line, row, problem) for line, row, problem in rows),
                       model=model, workers=workers)
    tmp = out_path.with_name(out_path.name + ".part")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "person_id"])
        w.writerows(result.assignments())
    tmp.replace(out_path)
    if review_path is not None:
        with review_path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["record_a", "record_b", "weight", "guards"])
            for i, j, weight, why in result.review:
                w.writerow([result.record_ids[i], result.record_ids[j], f"{weight:.2f}",
                            ";".join(why)])
    return result


def link_rows(rows: Iterable[tuple[int, Mapping[str, str], str | None] | Mapping[str, str]],
              *, model: LinkageModel | None = None, workers: int | None = None,
              max_block: int = 1000) -> BulkResult:
    """Link records (``read_rows`` triples or plain dicts) into persons."""
    started = time.perf_counter()
    features: list[Features] = []
    linkable: list[bool] = []
    problems: list[RowProblem] = []
    seen: set[tuple[str, str]] = set()
    counts: Counter[str] = Counter()
    for n, item in enumerate(rows, 1):
        line, row, problem = item if isinstance(item, tuple) else (n, item, None)
        f = extract(row)
        key = (f.site, f.record_id)
        if problem is None and key in seen:
            problem = "duplicate record_id (same site); kept as its own person, not linked"
        seen.add(key)
        for p in f.problems:
            counts[p.code] += 1
        if problem:
            problems.append(RowProblem(line, f.record_id, problem))
        features.append(f)
        ok = problem is None and not f.blank
        counts["blank"] += (problem is None and f.blank)
        linkable.append(ok)
    return _link(features, linkable, problems, counts, model=model, workers=workers,
                 max_block=max_block, started=started)


def link_features(features: Sequence[Features], *, model: LinkageModel | None = None,
                  workers: int | None = None, max_block: int = 1000) -> BulkResult:
    """Link already extracted records (``federation identity tune`` re-links the store's)."""
    return _link(features, [not f.blank for f in features], [], Counter(), model=model,
                 workers=workers, max_block=max_block, started=time.perf_counter())


def _link(features: Sequence[Features], linkable: list[bool], problems: list[RowProblem],
          counts: Counter[str], *, model: LinkageModel | None, workers: int | None,
          max_block: int, started: float) -> BulkResult:
    t_read = time.perf_counter()
    pair_files, patterns, block_stats = _candidate_pairs(features, linkable, max_block,
                                                         workers or min(2, os.cpu_count() or 1))
    t_pairs = time.perf_counter()
    try:
        sample = [f for f, ok in zip(features, linkable) if ok]
        if model is None and (len(sample) < MIN_TRAINING_RECORDS or not patterns):
            model = LinkageModel.default()      # too little data to learn weights from
        if model is None:
            model = estimate(sample, {(c % _MASKS, _decode(c // _MASKS)): n
                                      for c, n in patterns.items()},
                             rng=random.Random(20261122))
        person_of, review, linked = _cluster(features, linkable, model, pair_files, patterns)
    finally:
        for p in pair_files:
            p.unlink(missing_ok=True)
        if pair_files:
            pair_files[0].parent.rmdir()
    done = time.perf_counter()
    stats: dict[str, object] = {
        "records": len(features), "linkable": sum(linkable),
        "persons": len(set(person_of)), "candidate_pairs": sum(patterns.values()),
        "links": linked, "review_pairs": len(review), "row_problems": len(problems),
        "field_problems": dict(counts), **block_stats,
        "seconds": {"read": round(t_read - started, 2), "pairs": round(t_pairs - t_read, 2),
                    "train_and_cluster": round(done - t_pairs, 2)}}
    return BulkResult([f.record_id for f in features], person_of, model, review, problems,
                      stats)


def _encode(levels: Sequence[int]) -> int:
    code = 0
    for lv in levels:
        code = code * _BASE + lv + 1
    return code


def _decode(code: int) -> tuple[int, ...]:
    out = []
    for _ in FIELDS:
        code, r = divmod(code, _BASE)
        out.append(r - 1)
    return tuple(reversed(out))


# ------------------------------------------------------------------------------ pairs

_shared: dict[str, object] = {}


def _candidate_pairs(features: Sequence[Features], linkable: Sequence[bool], max_block: int,
                     workers: int) -> tuple[list[Path], Counter[int], dict[str, object]]:
    rec, hashes = [], []
    for i, (f, ok) in enumerate(zip(features, linkable)):
        if ok:
            for h in hashed_keys(f):
                rec.append(i)
                hashes.append(h)
    rec_a = np.asarray(rec, dtype=np.int64)
    hash_a = np.asarray(hashes, dtype=np.int64)
    order = np.argsort(hash_a, kind="stable")
    rec_a, hash_a = rec_a[order], hash_a[order]
    if len(hash_a):
        starts = np.flatnonzero(np.r_[True, hash_a[1:] != hash_a[:-1]])
        sizes = np.diff(np.r_[starts, len(hash_a)])
    else:
        starts = sizes = np.zeros(0, dtype=np.int64)
    too_big = sizes > max_block
    dropped = set(hash_a[starts[too_big]].tolist())
    keep = (sizes >= 2) & ~too_big
    groups = [(int(s), int(z)) for s, z in zip(starts[keep], sizes[keep])]
    # each record's usable key set, for the "smallest shared key owns the pair" rule
    by_rec: dict[int, list[int]] = {}
    for i, h in zip(rec, hashes):
        if h not in dropped:
            by_rec.setdefault(i, []).append(h)
    key_sets = {i: frozenset(hs) for i, hs in by_rec.items()}
    _shared.update(features=features, rec=rec_a, hash=hash_a, groups=groups, keys=key_sets)
    tmpdir = Path(tempfile.mkdtemp(prefix="empi-pairs-"))
    parts = [(w, workers, tmpdir / f"pairs-{w}.bin") for w in range(workers)]
    try:
        if workers > 1 and len(groups) > 1000:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers) as pool:
                results = pool.map(_pair_worker, parts)
        else:
            results = [_pair_worker(p) for p in parts]
    finally:
        _shared.clear()
    patterns: Counter[int] = Counter()
    for r in results:
        patterns.update(r)
    stats = {"blocks": len(groups), "blocks_skipped_as_too_common": int(too_big.sum())}
    return [p[2] for p in parts], patterns, stats


def _pair_worker(part: tuple[int, int, Path]) -> Counter[int]:
    worker, workers, path = part
    features: Sequence[Features] = _shared["features"]  # type: ignore[assignment]
    rec: np.ndarray = _shared["rec"]  # type: ignore[assignment]
    hashes: np.ndarray = _shared["hash"]  # type: ignore[assignment]
    groups: list[tuple[int, int]] = _shared["groups"]  # type: ignore[assignment]
    keys: dict[int, frozenset[int]] = _shared["keys"]  # type: ignore[assignment]
    patterns: Counter[int] = Counter()
    buf: list[tuple[int, int, int]] = []
    with path.open("wb") as out:
        for g in range(worker, len(groups), workers):
            start, size = groups[g]
            h = int(hashes[start])
            members = rec[start:start + size].tolist()
            for x in range(size):
                i = members[x]
                ki, fi = keys[i], features[i]
                for y in range(x + 1, size):
                    j = members[y]
                    shared = ki & keys[j]
                    if i == j or min(shared) != h:
                        continue
                    code = _encode(compare(fi, features[j])) * _MASKS + kind_mask(shared)
                    patterns[code] += 1
                    buf.append((i, j, code) if i < j else (j, i, code))
            if len(buf) >= _CHUNK:
                np.asarray(buf, dtype=np.int64).tofile(out)
                buf.clear()
        if buf:
            np.asarray(buf, dtype=np.int64).tofile(out)
    return patterns


def _read_pairs(path: Path) -> Iterator[np.ndarray]:
    per_chunk = _CHUNK * 3
    with path.open("rb") as fh:
        while True:
            chunk = np.fromfile(fh, dtype=np.int64, count=per_chunk)
            if not len(chunk):
                return
            yield chunk.reshape(-1, 3)


# ------------------------------------------------------------------------------ clusters

def _cluster(features: Sequence[Features], linkable: Sequence[bool], model: LinkageModel,
             pair_files: Sequence[Path], patterns: Counter[int]
             ) -> tuple[list[int], list[tuple[int, int, float, tuple[str, ...]]], int]:
    codes = np.fromiter(patterns.keys(), dtype=np.int64, count=len(patterns))
    table: dict[int, tuple[float, str, tuple[str, ...]]] = {}
    for code in patterns:
        levels = _decode(code // _MASKS)
        score = model.score_levels(levels)
        table[code] = (score.weight, model.decide(score), score.guards)
    link_codes = np.array([c for c in codes.tolist() if table[c][1] == LINK], dtype=np.int64)
    review_codes = np.array([c for c in codes.tolist() if table[c][1] == REVIEW],
                            dtype=np.int64)
    weight_of = {c: table[c][0] for c in table}
    links: list[tuple[float, int, int]] = []
    review: list[tuple[int, int, float, tuple[str, ...]]] = []
    for path in pair_files:
        for chunk in _read_pairs(path):
            for i, j, c in chunk[np.isin(chunk[:, 2], link_codes)].tolist():
                links.append((weight_of[c], i, j))
            for i, j, c in chunk[np.isin(chunk[:, 2], review_codes)].tolist():
                review.append((i, j, weight_of[c], table[c][2]))
    links.sort(key=lambda t: -t[0])
    parent = list(range(len(features)))
    ids: dict[int, set[str]] = {i: {f.national_id} for i, f in enumerate(features)
                                if f.national_id and linkable[i]}

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    linked = 0
    for _w, i, j in links:
        ri, rj = root(i), root(j)
        if ri == rj:
            continue
        a, b = ids.get(ri, set()), ids.get(rj, set())
        if a and b and a != b:
            review.append((i, j, _w, ("id-conflict-in-cluster",)))
            continue
        parent[rj] = ri
        if b:
            ids[ri] = a | b
        linked += 1
    numbering: dict[int, int] = {}
    person_of = [numbering.setdefault(root(i), len(numbering) + 1) for i in range(len(features))]
    return person_of, review, linked
