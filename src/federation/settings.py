"""Typed, frozen configuration, read once from a TOML file and ``FEDERATION_*`` variables.

This is the only module that reads the environment. Every setting has one dotted key
(``tls.cert``) used in the TOML file and one environment variable
(``FEDERATION_TLS_CERT``) that overrides it; a bad value fails fast with a
:class:`~federation.errors.ConfigError` naming both. Relative paths in a file are
resolved against the file's own directory, so a site folder can be moved whole.

Gateway file (``gateway.toml``)::

    database_url = "sqlite:///gateway.db"      # FEDERATION_DATABASE_URL
    # database_url_file = "/run/secrets/database_url"   # or read it from a secret file
    grpc_listen = "127.0.0.1:50051"            # FEDERATION_GRPC_LISTEN
    http_listen = "127.0.0.1:8080"             # FEDERATION_HTTP_LISTEN
    [tls]                                      # FEDERATION_TLS_CERT / _KEY / _CA / _CRL
    cert = "pki/gateway.crt"
    privacy_keyring = "privacy-keys.json"      # FEDERATION_PRIVACY_KEYRING (created if missing)
    [[sites]]                                  # consortium registry, seeded at start
    id = "city-1"; name = "市第一人民医院"; tier = "city"
    archive = "replicate"                      # or "federate" (see ARCHIVE_MODES)

Node file (``site.toml``)::

    site_id = "county-a"                       # must match the node certificate
    listen = "127.0.0.1:50061"
    gateway = "127.0.0.1:50051"                # or replicas: "10.0.0.5:50051,10.0.0.6:50051"
    [source]
    kind = "sql"; path = "his.sqlite"; mapping = "vendor_a"
    [[source.extra]]                           # more systems of the same site
    kind = "hl7"; path = "lis/"                # LIS drop folder (ORU^R01, ADT)
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.errors import ConfigError
from federation.rpc.channels import channel_target

__all__ = [
    "TlsSettings",
    "SiteEntry",
    "GatewaySettings",
    "ARCHIVE_MODES",
    "SOURCE_KINDS",
    "SourceSettings",
    "NodeSettings",
    "load_gateway_settings",
    "load_node_settings",
    "config_kind",
    "env_flag",
]

TIERS = ("township", "county", "city")
#: ``log_format`` values (kept here so that settings import nothing of the logging set-up)
LOG_FORMATS = ("text", "json")
#: how the regional archive holds a site's records: ``replicate`` — the gateway keeps a copy
#: kept current from the node's change feed; ``federate`` — the gateway keeps only the
#: site's Patients (for the EMPI) and fetches the rest live from the node on every read
ARCHIVE_MODES = ("replicate", "federate")
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None


@dataclass(frozen=True, slots=True)
class SiteEntry:
    """One member of the consortium registry, as configured."""

    id: str
    name: str
    tier: str
    parent: str | None = None
    #: one of :data:`ARCHIVE_MODES`
    archive: str = "replicate"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    database_url: str
    grpc_listen: str
    http_listen: str
    tls: TlsSettings
    sites: tuple[SiteEntry, ...] = ()
    heartbeat_interval_ms: int = 5000
    unreachable_after_ms: int = 15000
    max_message_bytes: int = 4 * 1024 * 1024
    search_deadline_ms: int = 5000
    inbox_poll_ms: int = 1000
    #: every online site's change feed is pulled at least this often (and on its notices)
    sync_interval_ms: int = 300_000
    #: check every pulled resource against the FHIR R4 models (nodes already did)
    sync_validate: bool = True
    #: federate-mode sites must answer an archive read within this (then: a warning entry)
    archive_deadline_ms: int = 2000
    #: an encounter at a site within this many days makes a care relationship
    archive_care_window_days: int = 365
    #: index rows of persons' records kept between paged reads (0: none; ~600 bytes each)
    archive_index_cache_rows: int = 30_000
    #: a lab result older than this (effective time) raises no critical-result alert
    archive_alert_max_age_hours: int = 72
    #: key for research-export pseudonyms and date shifts (default: derived from the
    #: gateway's TLS key, so every replica agrees without another secret to distribute)
    archive_deid_key: str = ""
    #: the consortium's referral rules (routing, time limits, reject reasons); None = packaged
    referral_rules: Path | None = None
    #: how often referral time limits are checked for escalation
    referral_sweep_ms: int = 30_000
    #: the consortium's consult pools, kinds, time limits and meeting link; None = packaged
    consult_rules: Path | None = None
    #: how often consult time limits (unclaimed requests) are checked for escalation
    consult_sweep_ms: int = 30_000
    #: the largest study object the gateway holds whole to render it for a browser
    #: (``…/studies/{study}/{object}/view``); larger ones are refused (413), and are
    #: still streamed as they are
    consult_view_max_bytes: int = 64 * 1024 * 1024
    #: how often the audit log's head is signed while it grows (nodes' receipt fetches
    #: also sign it on demand)
    audit_sth_interval_ms: int = 10_000
    #: the privacy key ring (AES-GCM keys for resident IDs and phones at rest, and the
    #: key of the EMPI's keyed hashes); None stores them in clear
    privacy_keyring: Path | None = None
    log_level: str = "INFO"
    #: ``text`` or ``json`` (one object a line, for a log collector)
    log_format: str = "text"
    #: per replica: requests a second one signed-in person may send to the HTTP API
    #: (bursts of 3 × that), and sign-in attempts a minute from one client address
    http_rate_per_user: float = 20.0
    signin_rate_per_minute: float = 30.0
    #: per replica: gRPC calls a second one certificate (a site's node, an operator) may
    #: make (bursts of 3 × that); a node's steady load is a few calls a second
    grpc_rate_per_node: float = 200.0

    def archive_modes(self) -> dict[str, str]:
        """{site id: archive mode} of the configured registry."""
        return {s.id: s.archive for s in self.sites}


#: kinds of site source a node reads (``hl7`` and ``pacs`` add to a HIS as extra feeds)
SOURCE_KINDS = ("sql", "csv", "hl7", "pacs")


@dataclass(frozen=True, slots=True)
class SourceSettings:
    kind: str
    path: Path
    mapping: str | None = None
    #: further systems of the same site (``[[source.extra]]``): LIS feed, PACS list …
    extra: tuple[SourceSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSettings:
    site_id: str
    listen: str
    gateway: str
    tls: TlsSettings
    source: SourceSettings
    state_dir: Path
    advertise: str = ""
    max_message_bytes: int = 4 * 1024 * 1024
    backoff_initial_ms: int = 500
    backoff_max_ms: int = 15000
    #: how often the node rescans its source for the change feed (skipped when unchanged)
    feed_scan_interval_ms: int = 60_000
    #: how often the node fetches its audit receipts from the gateway
    audit_receipts_interval_ms: int = 30_000
    #: where the site keeps consult material too large to send (DICOM studies, ECG
    #: waveforms, slide images): one folder per study; None = the node serves none
    studies_dir: Path | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """The address the gateway should dial (``advertise`` or ``listen``)."""
        return self.advertise or self.listen


# ---------------------------------------------------------------------------- reading


class _Reader:
    """Looks keys up in env first, then the file; converts and names the key on failure."""

    def __init__(self, data: Mapping[str, Any], env: Mapping[str, str], base: Path) -> None:
        self._data, self._env, self._base = data, env, base

    @staticmethod
    def env_name(key: str) -> str:
        return "FEDERATION_" + key.replace(".", "_").upper()

    def raw(self, key: str) -> tuple[Any, str] | None:
        name = self.env_name(key)
        if name in self._env and self._env[name] != "":
            return self._env[name], f"environment variable {name}"
        node: Any = self._data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node, f"setting '{key}'"

    def str(self, key: str, default: str | None = None) -> str:
        found = self.raw(key)
        if found is None:
            if default is None:
                raise ConfigError(
                    f"missing setting '{key}' (set it in the config file or {self.env_name(key)})"
                )
            return default
        value, where = found
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
        return value.strip()

    def opt_str(self, key: str) -> str | None:
        return self.str(key) if self.raw(key) is not None else None

    def int(self, key: str, default: int, *, minimum: int = 1) -> int:
        found = self.raw(key)
        if found is None:
            return default
        value, where = found
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a whole number, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{where} must be at least {minimum}, got {number}")
        return number

    def float(self, key: str, default: float, *, minimum: float) -> float:
        found = self.raw(key)
        if found is None:
            return default
        value, where = found
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not number >= minimum:
            raise ConfigError(f"{where} must be at least {minimum:g}, got {number:g}")
        return number

    def bool(self, key: str, default: bool) -> bool:
        found = self.raw(key)
        if found is None:
            return default
        value, where = found
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {value!r}")

    def path(self, key: str, default: Path | None = None) -> Path:
        found = self.raw(key)
        if found is None:
            if default is None:
                raise ConfigError(
                    f"missing path '{key}' (set it in the config file or {self.env_name(key)})"
                )
            return default
        value, where = found
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self._base / p).resolve()

    def opt_path(self, key: str) -> Path | None:
        return self.path(key) if self.raw(key) is not None else None

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.str(key, default).lower()
        if value not in choices:
            raise ConfigError(f"setting '{key}' ({self.env_name(key)}) must be one of "
                              f"{', '.join(choices)}, got {value!r}")
        return value

    def hostport(self, key: str, default: str | None = None) -> str:
        value = self.str(key, default)
        m = _HOSTPORT.match(value)
        if not m or not 0 <= int(m.group(2)) <= 65535:
            raise ConfigError(f"setting '{key}' must be host:port, got {value!r}")
        return value

    def hostports(self, key: str, default: str) -> str:
        """One ``host:port`` or several, comma-separated (gateway replicas)."""
        value = self.str(key, default)
        parts = [p.strip() for p in value.split(",")]
        for part in parts:
            m = _HOSTPORT.match(part)
            if not m or not 0 <= int(m.group(2)) <= 65535:
                raise ConfigError(f"setting '{key}' must be host:port or a comma-separated "
                                  f"list of them, got {value!r}")
        try:
            channel_target(",".join(parts))
        except ConfigError as exc:
            raise ConfigError(f"setting '{key}': {exc.message}") from None
        return ",".join(parts)

    def tls(self) -> TlsSettings:
        return TlsSettings(
            cert=self.path("tls.cert"),
            key=self.path("tls.key"),
            ca=self.path("tls.ca"),
            crl=self.opt_path("tls.crl"),
        )


def _read_file(path: Path | None) -> tuple[dict[str, Any], Path]:
    if path is None:
        return {}, Path.cwd()
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh), path.resolve().parent
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _sites(data: Mapping[str, Any]) -> tuple[SiteEntry, ...]:
    entries = []
    for i, raw in enumerate(data.get("sites", []) or []):
        where = f"sites[{i}]"
        if not isinstance(raw, Mapping) or not raw.get("id") or not raw.get("name"):
            raise ConfigError(f"{where} needs at least 'id' and 'name'")
        tier = raw.get("tier")
        if tier not in TIERS:
            raise ConfigError(f"{where}.tier must be one of {', '.join(TIERS)}, got {tier!r}")
        mode = raw.get("archive", "replicate")
        if mode not in ARCHIVE_MODES:
            raise ConfigError(f"{where}.archive must be one of {', '.join(ARCHIVE_MODES)}, "
                              f"got {mode!r}")
        entries.append(SiteEntry(str(raw["id"]), str(raw["name"]), tier, raw.get("parent"),
                                 mode))
    return tuple(entries)


def _sqlite_beside(url: str, base: Path) -> str:
    """A relative SQLite file (``sqlite:///gateway.db``) is beside the config file, like
    every other relative path in it — not in whatever directory the process started."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix):] and not url[len(prefix):].startswith(
            ("/", ":memory:")) and "://" not in url[len(prefix):]:
        return prefix + (base / url[len(prefix):]).as_posix()
    return url


def load_gateway_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Read the gateway's settings; ``env`` defaults to ``os.environ``."""
    data, base = _read_file(path)
    r = _Reader(data, os.environ if env is None else env, base)
    interval = r.int("heartbeat_interval_ms", 5000, minimum=50)
    return GatewaySettings(
        database_url=_sqlite_beside(_database_url(r, base), base),
        grpc_listen=r.hostport("grpc_listen", "127.0.0.1:50051"),
        http_listen=r.hostport("http_listen", "127.0.0.1:8080"),
        tls=r.tls(),
        sites=_sites(data),
        heartbeat_interval_ms=interval,
        unreachable_after_ms=r.int("unreachable_after_ms", 3 * interval, minimum=interval),
        max_message_bytes=r.int("max_message_bytes", 4 * 1024 * 1024, minimum=1024),
        search_deadline_ms=r.int("search_deadline_ms", 5000, minimum=10),
        inbox_poll_ms=r.int("inbox_poll_ms", 1000, minimum=10),
        sync_interval_ms=r.int("sync_interval_ms", 300_000, minimum=100),
        sync_validate=r.bool("sync_validate", True),
        http_rate_per_user=r.float("http_rate_per_user", 20.0, minimum=0.1),
        signin_rate_per_minute=r.float("signin_rate_per_minute", 30.0, minimum=1.0),
        grpc_rate_per_node=r.float("grpc_rate_per_node", 200.0, minimum=1.0),
        archive_deadline_ms=r.int("archive_deadline_ms", 2000, minimum=10),
        archive_care_window_days=r.int("archive_care_window_days", 365),
        archive_index_cache_rows=r.int("archive_index_cache_rows", 30_000, minimum=0),
        archive_alert_max_age_hours=r.int("archive_alert_max_age_hours", 72),
        archive_deid_key=r.opt_str("archive_deid_key") or "",
        referral_rules=r.opt_path("referral_rules"),
        referral_sweep_ms=r.int("referral_sweep_ms", 30_000, minimum=100),
        consult_rules=r.opt_path("consult_rules"),
        consult_sweep_ms=r.int("consult_sweep_ms", 30_000, minimum=100),
        consult_view_max_bytes=r.int("consult_view_max_bytes", 64 * 1024 * 1024,
                                     minimum=1024),
        audit_sth_interval_ms=r.int("audit_sth_interval_ms", 10_000, minimum=100),
        privacy_keyring=r.path("privacy_keyring", base / "privacy-keys.json"),
        log_level=r.str("log_level", "INFO").upper(),
        log_format=r.choice("log_format", LOG_FORMATS, "text"),
    )


def _database_url(r: _Reader, base: Path) -> str:
    """``database_url``, or the first line of the file ``database_url_file`` names (a
    Docker or Kubernetes secret: the password never sits in an environment variable)."""
    url_file = r.opt_path("database_url_file")
    if url_file is None:
        return r.str("database_url", f"sqlite:///{(base / 'gateway.db').as_posix()}")
    if r.raw("database_url") is not None:
        raise ConfigError("set either database_url or database_url_file, not both")
    try:
        url = url_file.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"database_url_file {url_file} cannot be read: {exc.strerror}") from None
    if not url or not url[0].strip():
        raise ConfigError(f"database_url_file {url_file} is empty")
    return url[0].strip()


def _extra_sources(data: Mapping[str, Any], base: Path) -> tuple[SourceSettings, ...]:
    """``[[source.extra]]`` tables (file only: a list does not fit one variable)."""
    raw = (data.get("source") or {}).get("extra", [])
    if not isinstance(raw, list):
        raise ConfigError("setting 'source.extra' must be a list of [[source.extra]] tables")
    extras = []
    for i, entry in enumerate(raw):
        where = f"[[source.extra]] #{i + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table with kind and path")
        r = _Reader(entry, {}, base)
        kind = r.str("kind")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"{where}: kind must be one of {list(SOURCE_KINDS)}, got {kind!r}")
        extras.append(SourceSettings(kind=kind, path=r.path("path"),
                                     mapping=r.opt_str("mapping")))
    return tuple(extras)


def load_node_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> NodeSettings:
    """Read one site's node-agent settings (``site.toml``)."""
    data, base = _read_file(path)
    r = _Reader(data, os.environ if env is None else env, base)
    kind = r.str("source.kind")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"setting 'source.kind' must be one of {list(SOURCE_KINDS)}, "
                          f"got {kind!r}")
    return NodeSettings(
        site_id=r.str("site_id"),
        listen=r.hostport("listen", "127.0.0.1:50061"),
        gateway=r.hostports("gateway", "127.0.0.1:50051"),
        advertise=r.opt_str("advertise") or "",
        tls=r.tls(),
        source=SourceSettings(kind=kind, path=r.path("source.path"),
                              mapping=r.opt_str("source.mapping"),
                              extra=_extra_sources(data, base)),
        state_dir=r.path("state_dir", base / "state"),
        studies_dir=r.opt_path("studies_dir"),
        max_message_bytes=r.int("max_message_bytes", 4 * 1024 * 1024, minimum=1024),
        backoff_initial_ms=r.int("backoff_initial_ms", 500, minimum=10),
        backoff_max_ms=r.int("backoff_max_ms", 15000, minimum=10),
        feed_scan_interval_ms=r.int("feed_scan_interval_ms", 60_000, minimum=100),
        audit_receipts_interval_ms=r.int("audit_receipts_interval_ms", 30_000, minimum=100),
        log_level=r.str("log_level", "INFO").upper(),
        log_format=r.choice("log_format", LOG_FORMATS, "text"),
    )


def config_kind(path: Path) -> str:
    """``'node'`` for a site's file (it names a ``site_id``), else ``'gateway'``: lets one
    container image and one health check serve both from the file it is given."""
    data, _ = _read_file(path)
    return "node" if "site_id" in data else "gateway"


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """True when ``name`` is set to a truthy value (``1``, ``true``, ``yes``)."""
    value = (os.environ if env is None else env).get(name, "")
    return value.strip().lower() in ("1", "true", "yes", "on")
