"""Site adapters: read a site's own system (HIS database, spreadsheet export) read-only.

    SourceAdapter          the interface (base.py)
    ├── SqlAdapter         a HIS database through a per-vendor TOML mapping (sql.py)
    ├── CsvAdapter         patients.csv / visits.csv exports with Chinese headers (csv_export.py)
    ├── Hl7Adapter         an HL7 v2 drop folder: ADT A01/A04/A08, ORU^R01 (hl7v2.py)
    ├── PacsStudyListAdapter  a PACS/RIS study list with DICOM keyword headers (pacs.py)
    └── CompositeAdapter   a site's HIS plus the feeds that add to it (composite.py)

``open_adapter(kind, path, mapping)`` picks one from a node's ``[source]`` settings;
``open_sources(source)`` opens ``[source]`` and its ``[[source.extra]]`` feeds together.
"""

from __future__ import annotations

from pathlib import Path

from federation.errors import ConfigError
from federation.nodes.adapters.base import SourceAdapter, record_matches
from federation.nodes.adapters.composite import CompositeAdapter
from federation.nodes.adapters.csv_export import CsvAdapter
from federation.nodes.adapters.hl7v2 import Hl7Adapter
from federation.nodes.adapters.pacs import PacsStudyListAdapter
from federation.nodes.adapters.sql import SqlAdapter, VendorMapping, load_mapping
from federation.settings import SOURCE_KINDS, SourceSettings

__all__ = [
    "SOURCE_KINDS",
    "CompositeAdapter",
    "CsvAdapter",
    "Hl7Adapter",
    "PacsStudyListAdapter",
    "SourceAdapter",
    "SqlAdapter",
    "VendorMapping",
    "load_mapping",
    "open_adapter",
    "open_sources",
    "record_matches",
]

def open_adapter(kind: str, source_path: Path, mapping: str | Path | None = None) -> SourceAdapter:
    """The adapter for one site's source. ``'sql'`` needs a mapping: a packaged name such as
    ``'vendor_a'`` or a path to a TOML file; ``'csv'`` takes the export folder (or its
    patients file), ``'hl7'`` a drop folder or file, ``'pacs'`` a study list; those
    ignore ``mapping``. Raises ConfigError for an unusable kind or
    mapping, SourceError when the source itself cannot be opened."""
    if kind == "sql":
        if mapping is None:
            raise ConfigError("source kind 'sql' needs a mapping: a packaged name such as "
                              "'vendor_a' or the path of a mapping TOML file")
        return SqlAdapter(Path(source_path), load_mapping(mapping))
    if kind == "csv":
        return CsvAdapter(Path(source_path))
    if kind == "hl7":
        return Hl7Adapter(Path(source_path))
    if kind == "pacs":
        return PacsStudyListAdapter(Path(source_path))
    raise ConfigError(f"unknown source kind {kind!r}; expected one of {list(SOURCE_KINDS)}")


def open_sources(source: SourceSettings) -> SourceAdapter:
    """The site's adapter: ``[source]`` alone, or with its extra feeds as one composite.
    Sources opened before a failing one are closed again."""
    opened = [open_adapter(source.kind, source.path, source.mapping)]
    try:
        for extra in source.extra:
            opened.append(open_adapter(extra.kind, extra.path, extra.mapping))
    except BaseException:
        for adapter in opened:
            adapter.close()
        raise
    return opened[0] if len(opened) == 1 else CompositeAdapter(opened)
