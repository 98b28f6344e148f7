"""Certificate rotation without a restart: TLS files followed on disk.

A gateway or node runs for months; its certificate does not. :class:`TlsFiles` holds the
endpoint's current :class:`~federation.security.tls.TlsMaterial` and re-reads the three
files (certificate, key, CA) when a cheap ``stat`` says one of them changed — at most
every ``recheck_seconds``. New material is taken only when it is whole and sound:

* the key belongs to the certificate, and the CA signed it (``TlsMaterial.load``);
* the certificate is inside its validity window;
* it names the same holder (role, site, tier, name) as the material it replaces — a
  process does not change identity on the fly.

Anything else — a key written before its certificate, a truncated file, a certificate
for another site — keeps the current material in force and logs one warning per state
of the files (paths and serials only; never key material). The next change is tried
again, so a rotation that lands in two renames is taken once both are in place.

Servers use :func:`reloading_server_credentials` (gRPC asks before every TLS handshake);
clients use :class:`federation.rpc.rotating.RotatingChannel`, which opens a new channel
for new calls when the material changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from federation.errors import AuthenticationError, ConfigError
from federation.security.identity import PeerIdentity, identity_from_pem
from federation.security.tls import TlsMaterial, check_certificate_validity

__all__ = ["ROTATION_CHECK_SECONDS", "TlsFiles", "reloading_server_credentials"]

log = logging.getLogger("federation.security.rotation")

#: how often the TLS files are stat'ed at most (per process, per set of files)
ROTATION_CHECK_SECONDS = 1.0

_Stamp = tuple[tuple[int, int, int] | None, ...]  # per file (mtime_ns, size, inode) or None


def _holder(identity: PeerIdentity) -> tuple[str, str, str | None, str | None]:
    return identity.role, identity.name, identity.site_id, identity.tier


class TlsFiles:
    """An endpoint's certificate, key and CA files, and the last good material read from them.

    Built with the files as they are at start, failing fast (:class:`ConfigError`) when
    they are not usable; afterwards a bad state on disk never raises, it is only logged.
    ``generation`` counts the material changes taken (0 at start). Thread-safe: gRPC's
    core calls the server's fetcher from its own threads.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        ca: Path,
        *,
        recheck_seconds: float = ROTATION_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths = (Path(cert), Path(key), Path(ca))
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._stat()
        material = TlsMaterial.load(*self._paths)
        self._holder = _holder(identity_from_pem(material.cert_pem))
        self._checked_at = clock()
        #: (generation, material), swapped as one so that readers never see them disagree
        self._state: tuple[int, TlsMaterial] = (0, material)

    @property
    def cert_path(self) -> Path:
        return self._paths[0]

    @property
    def recheck_seconds(self) -> float:
        return self._recheck

    @property
    def generation(self) -> int:
        return self._state[0]

    @property
    def material(self) -> TlsMaterial:
        """The material in force, as of the last check (no check is made here)."""
        return self._state[1]

    def current(self) -> tuple[int, TlsMaterial]:
        """``(generation, material)`` in force, after a check of the files if one is due."""
        self.refresh()
        return self._state

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the files if they changed since the last look; True when new material
        was taken. Never raises for the state of the files."""
        now = self._clock()
        if not force and now - self._checked_at < self._recheck:
            return False
        with self._lock:
            if not force and now - self._checked_at < self._recheck:
                return False
            self._checked_at = now
            stamp = self._stat()
            if stamp == self._stamp:
                return False
            self._stamp = stamp  # a bad state is reported once, then waits for a change
            try:
                material = self._load()
            except (ConfigError, AuthenticationError) as exc:
                log.warning("the TLS files changed but cannot be used (%s); keeping the "
                            "certificate in force (%s)", exc, self._describe(self.material))
                return False
            generation, before = self._state
            if material == before:
                return False  # touched, or rewritten with the same bytes
            self._state = (generation + 1, material)
            log.info("certificate rotated: now %s, was %s; new connections use it",
                     self._describe(material), self._describe(before))
            return True

    def _stat(self) -> _Stamp:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                st = path.stat()  # follows symlinks: a Kubernetes secret swaps its ..data link
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def _load(self) -> TlsMaterial:
        material = TlsMaterial.load(*self._paths)
        validity = check_certificate_validity(material.cert_pem)
        if not validity.ok:
            raise ConfigError(f"{self._paths[0]}: {validity.message}")
        identity = identity_from_pem(material.cert_pem)
        if _holder(identity) != self._holder:
            raise ConfigError(
                f"{self._paths[0]} is for {identity.describe()}, not for the "
                f"{identity_from_pem(self.material.cert_pem).describe()} this process "
                f"serves; a process keeps its identity — restart it to change that")
        return material

    @staticmethod
    def _describe(material: TlsMaterial) -> str:
        identity = identity_from_pem(material.cert_pem)
        return (f"serial {identity.serial} for {identity.describe()} (valid until "
                f"{identity.not_after:%Y-%m-%d})")


def _server_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem)


def reloading_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Mutual TLS whose certificate, key and trusted CA follow ``files``.

    gRPC calls the fetcher before each new connection's handshake; it answers None
    (keep the configuration) unless the files brought new material. Connections already
    open keep the certificate they were made with until they close."""
    served = {"generation": files.generation}

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            generation, material = files.current()
            if generation == served["generation"]:
                return None
            served["generation"] = generation
            return _server_configuration(material)
        except Exception as exc:  # never let a fetcher error reach gRPC's core
            log.error("could not check the TLS files for a new certificate: %s", exc)
            return None

    return grpc.dynamic_ssl_server_credentials(
        _server_configuration(files.material), fetch, require_client_authentication=True)
