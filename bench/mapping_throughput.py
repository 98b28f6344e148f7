#!/usr/bin/env python3
"""Resources mapped and validated per second per core: a node's full scan of its source.

Generates a synthetic consortium (fixed seed), opens a site's sources the way a node
does (``open_sources``), and times ``list(service.scan())`` in this one thread: every
source record read, mapped to FHIR R4 and validated with the ``fhir.resources`` models,
wrapped as an Envelope. CPU time (``time.process_time``) gives resources/s per core;
wall time is shown beside it. Two comparisons in the same run:

  * read vs map+validate   the adapter's calls (patient ids, patient, encounters,
                           clinical rows) are timed through a thin proxy; the rest of
                           the scan is mapping, coding, validation and JSON encoding
  * validation only        each Envelope's JSON re-validated alone
                           (``get_fhir_model_class(type).model_validate(json.loads(...))``)

    python bench/mapping_throughput.py                       # 3000 people, city-1 + county-b
    python bench/mapping_throughput.py --people 8000 --sites city-1
    python bench/mapping_throughput.py --workdir /tmp/consortium   # reuse a generated one
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SEED = 20261122
TARGET = 5000.0  # resources/s per core
_READS = ("iter_patient_ids", "get_patient", "encounters", "clinical")


class _Timed:
    """The adapter, with the CPU and wall time of its reads added up (one proxy call per
    patient and read, so the overhead is per patient, not per resource)."""

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter
        self.cpu = 0.0
        self.wall = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._adapter, name)
        if name not in _READS:
            return attr
        if name == "iter_patient_ids":
            return lambda: self._timed_iter(attr())
        return self._wrap(attr)

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu += time.process_time() - c0
                self.wall += time.perf_counter() - w0
        return call

    def _timed_iter(self, it: Any) -> Any:
        it = iter(it)
        while True:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self.cpu += time.process_time() - c0
                self.wall += time.perf_counter() - w0
            yield item


def _service(manifest: Any, site_id: str, timed: bool):
    from federation.nodes.adapters import open_sources
    from federation.nodes.service import NodeService

    spec = manifest.site(site_id)
    source = spec.source_settings()
    adapter = open_sources(source)
    proxy = _Timed(adapter) if timed else None
    return NodeService(site_id, spec.tier, proxy or adapter, source.kind), proxy, adapter


def _warm_up(manifest: Any, site_id: str, resources: int = 2000) -> None:
    """Import, compile and cache everything once on a small slice of the scan."""
    from federation.envelope import validate_resource

    service, _, adapter = _service(manifest, site_id, timed=False)
    try:
        for n, env in enumerate(service.scan()):
            validate_resource(env)
            if n >= resources:
                break
    finally:
        adapter.close()


def measure(manifest: Any, site_id: str) -> dict[str, Any]:
    from fhir.resources.R4B import get_fhir_model_class

    service, proxy, adapter = _service(manifest, site_id, timed=True)
    try:
        c0, w0 = time.process_time(), time.perf_counter()
        envelopes = list(service.scan())
        scan_cpu, scan_wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        adapter.close()
    quarantined = len(service.quarantined())

    c0, w0 = time.process_time(), time.perf_counter()
    for env in envelopes:
        get_fhir_model_class(env.resource_type).model_validate(json.loads(env.json))
    val_cpu, val_wall = time.process_time() - c0, time.perf_counter() - w0

    return {"site": site_id, "n": len(envelopes),
            "types": Counter(e.resource_type for e in envelopes),
            "bytes": sum(len(e.json) for e in envelopes), "quarantined": quarantined,
            "scan_cpu": scan_cpu, "scan_wall": scan_wall,
            "read_cpu": proxy.cpu, "read_wall": proxy.wall,
            "val_cpu": val_cpu, "val_wall": val_wall}


def report(r: dict[str, Any]) -> None:
    n = r["n"]
    print(f"\n== {r['site']}: {n} resources ({r['bytes'] / n:.0f} B JSON each on average), "
          f"{r['quarantined']} quarantined")
    print("   " + ", ".join(f"{t} {c}" for t, c in sorted(r["types"].items(),
                                                          key=lambda kv: -kv[1])))
    map_cpu = r["scan_cpu"] - r["read_cpu"]
    rows = [
        ("full scan (read+map+validate)", r["scan_cpu"], r["scan_wall"]),
        ("  source reads (adapter)", r["read_cpu"], r["read_wall"]),
        ("  map+validate+encode", map_cpu, r["scan_wall"] - r["read_wall"]),
        ("validation only (re-validate JSON)", r["val_cpu"], r["val_wall"]),
    ]
    print(f"   {'phase':<36} {'CPU s':>7} {'wall s':>7} {'res/s per core':>15} {'µs/res':>7}")
    for label, cpu, wall in rows:
        print(f"   {label:<36} {cpu:>7.2f} {wall:>7.2f} {n / cpu:>15,.0f} {cpu / n * 1e6:>7.0f}")
    rate = n / r["scan_cpu"]
    print(f"   resources mapped+validated per second per core: {rate:,.0f} "
          f"({'PASS' if rate >= TARGET else 'FAIL'} vs target >= {TARGET:,.0f})")
    print(f"   scan / validation-only CPU = {r['scan_cpu'] / r['val_cpu']:.2f}x; "
          f"reads are {r['read_cpu'] / r['scan_cpu']:.0%} of the scan's CPU")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--sites", default="city-1,county-b",
                        help="comma-separated site ids (default: city-1,county-b)")
    parser.add_argument("--workdir", type=Path,
                        help="generate into (or reuse a consortium in) this folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # quarantine warnings are counted, not shown

    from federation.synth import generate_consortium, load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        out = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        if args.workdir and (out / "consortium.json").exists():
            manifest = load_manifest(out)
            print(f"reusing the consortium in {out} ({manifest.people} people, "
                  f"seed {manifest.seed})")
        else:
            manifest = generate_consortium(out, seed=args.seed, people=args.people)
            print(f"generated {args.people} people (seed {args.seed}) in "
                  f"{time.perf_counter() - t0:.1f} s")
        sites = [s.strip() for s in args.sites.split(",") if s.strip()]
        _warm_up(manifest, sites[0])
        results = [measure(manifest, site) for site in sites]
    for r in results:
        report(r)
    n = sum(r["n"] for r in results)
    cpu = sum(r["scan_cpu"] for r in results)
    print(f"\nall sites: {n} resources, {n / cpu:,.0f} resources/s per core "
          f"(single thread; target >= {TARGET:,.0f})")
    return 0 if n / cpu >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
