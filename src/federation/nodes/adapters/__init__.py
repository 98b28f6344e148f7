"""Site adapters: read a site's own system (HIS database, spreadsheet export) read-only.

    SourceAdapter          the interface (base.py)
    ├── SqlAdapter         a HIS database through a per-vendor TOML mapping (sql.py)
    └── CsvAdapter         patients.csv / visits.csv exports with Chinese headers (csv_export.py)

``open_adapter(kind, path, mapping)`` picks one from a node's ``[source]`` settings.
"""

from __future__ import annotations

from pathlib import Path

from federation.errors import ConfigError
from federation.nodes.adapters.base import SourceAdapter, record_matches
from federation.nodes.adapters.csv_export import CsvAdapter
from federation.nodes.adapters.sql import SqlAdapter, VendorMapping, load_mapping

__all__ = [
    "SOURCE_KINDS",
    "CsvAdapter",
    "SourceAdapter",
    "SqlAdapter",
    "VendorMapping",
    "load_mapping",
    "open_adapter",
    "record_matches",
]

SOURCE_KINDS = ("sql", "csv")


def open_adapter(kind: str, source_path: Path, mapping: str | Path | None = None) -> SourceAdapter:
    """The adapter for one site's source. ``'sql'`` needs a mapping: a packaged name such as
    ``'vendor_a'`` or a path to a TOML file; ``'csv'`` takes the export folder (or its
    patients file) and ignores ``mapping``. Raises ConfigError for an unusable kind or
    mapping, SourceError when the source itself cannot be opened."""
    if kind == "sql":
        if mapping is None:
            raise ConfigError("source kind 'sql' needs a mapping: a packaged name such as "
                              "'vendor_a' or the path of a mapping TOML file")
        return SqlAdapter(Path(source_path), load_mapping(mapping))
    if kind == "csv":
        return CsvAdapter(Path(source_path))
    raise ConfigError(f"unknown source kind {kind!r}; expected one of {list(SOURCE_KINDS)}")
