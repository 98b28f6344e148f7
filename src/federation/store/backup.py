"""Online backups of SQLite stores: the gateway's embedded database and a node's state.

SQLite's online backup API (``sqlite3.Connection.backup``, https://sqlite.org/backup.html)
copies a live database page by page and restarts when a writer changes it, so the copy
is a consistent snapshot taken while the gateway or node keeps running — unlike a file
copy, which can catch a WAL database half-written. The copy is written beside the
destination and renamed into place once ``PRAGMA integrity_check`` passes, so a failed
backup never leaves a file that looks good. PostgreSQL is backed up with its own tools
(``pg_dump -Fc`` / ``pg_restore``): see deploy/BACKUP.md.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url

from federation.errors import ConfigError, SourceError

__all__ = ["sqlite_path", "backup_sqlite"]


def sqlite_path(database_url: str) -> Path:
    """The file of a ``sqlite:///…`` URL; ConfigError (pointing at pg_dump) otherwise."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise ConfigError(
            f"{url.get_backend_name()} databases are backed up with pg_dump -Fc and restored "
            "with pg_restore (deploy/BACKUP.md); this command copies SQLite stores")
    if not url.database or url.database == ":memory:":
        raise ConfigError("an in-memory SQLite database cannot be backed up")
    return Path(url.database)


def backup_sqlite(source: Path, destination: Path, *, pages_per_step: int = 1024) -> Path:
    """Copy the live SQLite database ``source`` to ``destination`` (replaced atomically)."""
    if not source.is_file():
        raise SourceError(f"{source} does not exist or is not a file")
    destination = destination.resolve()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst, pages=pages_per_step)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise SourceError(f"backing up {source} failed: {exc}") from None
    finally:
        src.close()
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise SourceError(f"the backup of {source} failed its integrity check: {verdict}")
    os.replace(partial, destination)
    return destination
