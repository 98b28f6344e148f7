"""Privacy at rest: resident ID numbers and phones encrypted in the gateway's store.

* **Encryption** — AES-256-GCM (NIST SP 800-38D) with a fresh 96-bit nonce per value and
  the value's place in the store as associated data (``identity_record/<site>/<record>/
  phone``), so a ciphertext copied to another row or field does not decrypt. Every
  ciphertext names its key id: ``enc:v1:<kid>:<base64url(nonce ‖ ciphertext ‖ tag)>`` for
  text, ``0x00 "FENC1" len(kid) kid nonce ciphertext`` for bytes. Values written before
  encryption was configured stay readable as they are until the rotation command
  re-encrypts them.
* **Keyed hashes** — matching and blocking never need the clear value back: the EMPI's
  blocking keys and record digests are keyed BLAKE2b (RFC 7693 §2.5: a MAC, like HMAC,
  and the hash the blocking keys already used) under the key ring's ``index_key``, so the
  ``identity_block`` table cannot be reversed by hashing every possible phone number.
* **Rotation without downtime** (``federation keys rotate``): a new key is added to the
  ring and made active; old keys stay readable; every replica re-reads the ring file when
  it changes (checked every few seconds, and at once on a key id it does not know); the
  command then re-encrypts row by row in small transactions while gateways keep running,
  and retires an old key only once no ciphertext in the store names it.

The key ring is a JSON file (mode 0600), named by the ``privacy_keyring`` setting
(``FEDERATION_PRIVACY_KEYRING``)::

    {"version": 1, "active": "k20261130040000",
     "keys": {"k20261130040000": "<base64 of 32 bytes>"}, "index_key": "<base64 of 32 bytes>"}
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from federation.errors import ConfigError, IntegrityError

__all__ = ["KeyRing", "FieldCipher", "TEXT_PREFIX", "BYTES_MAGIC", "create_keyring",
           "rotate_keyring", "retire_key"]

TEXT_PREFIX = "enc:v1:"
BYTES_MAGIC = b"\x00FENC1"
RELOAD_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class KeyRing:
    active: str
    keys: dict[str, bytes] = field(repr=False)
    index_key: bytes = field(repr=False)

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            keys = {str(k): base64.b64decode(v) for k, v in data["keys"].items()}
            ring = cls(str(data["active"]), keys, base64.b64decode(data["index_key"]))
        except FileNotFoundError:
            raise ConfigError(f"the privacy key ring {path} does not exist; create it with "
                              "`federation keys init`") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"the privacy key ring {path} is not a valid key ring file") from None
        if ring.active not in keys or any(len(k) != 32 for k in keys.values()) \
                or len(ring.index_key) != 32:
            raise ConfigError(f"the privacy key ring {path} needs 32-byte keys and an active "
                              "key that is among them")
        return ring

    def save(self, path: Path) -> None:
        body = json.dumps({"version": 1, "active": self.active,
                           "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()},
                           "index_key": base64.b64encode(self.index_key).decode()}, indent=1)
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
        os.replace(tmp, path)


def _new_kid() -> str:
    return "k" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)


def create_keyring(path: Path) -> KeyRing:
    """A new key ring file with one active key and an index key (kept if it exists)."""
    if Path(path).exists():
        return KeyRing.load(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    kid = _new_kid()
    ring = KeyRing(kid, {kid: AESGCM.generate_key(bit_length=256)}, secrets.token_bytes(32))
    ring.save(path)
    return ring


def rotate_keyring(path: Path) -> KeyRing:
    """Add a fresh key and make it the active one; every old key stays readable."""
    ring = KeyRing.load(path)
    kid = _new_kid()
    rotated = KeyRing(kid, {**ring.keys, kid: AESGCM.generate_key(bit_length=256)},
                      ring.index_key)
    rotated.save(path)
    return rotated


def retire_key(path: Path, kid: str) -> KeyRing:
    ring = KeyRing.load(path)
    if kid == ring.active:
        raise ConfigError(f"key {kid} is the active key; rotate first")
    rest = {k: v for k, v in ring.keys.items() if k != kid}
    retired = KeyRing(ring.active, rest, ring.index_key)
    retired.save(path)
    return retired


class FieldCipher:
    """Encrypts and decrypts single values with the key ring in ``path``, re-read when the
    file changes (so replicas follow a rotation without a restart)."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._ring = KeyRing.load(self._path)
        self._stamp = self._stat()
        self._checked = time.monotonic()
        self._aead = {k: AESGCM(v) for k, v in self._ring.keys.items()}

    @property
    def active(self) -> str:
        self._maybe_reload()
        return self._ring.active

    @property
    def index_key(self) -> bytes:
        return self._ring.index_key

    def _stat(self) -> tuple[int, int]:
        st = self._path.stat()
        return st.st_mtime_ns, st.st_size

    def _maybe_reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            try:
                stamp = self._stat()
            except OSError:
                return
            if stamp == self._stamp and not force:
                return
            ring = KeyRing.load(self._path)
            if ring.index_key != self._ring.index_key:
                raise ConfigError(f"the index key in {self._path} changed; it cannot be "
                                  "rotated by replacing it (blocking keys would no longer match)")
            self._ring, self._stamp = ring, stamp
            self._aead = {k: AESGCM(v) for k, v in ring.keys.items()}

    def _key(self, kid: str) -> AESGCM:
        if kid not in self._aead:
            self._maybe_reload(force=True)
        try:
            return self._aead[kid]
        except KeyError:
            raise ConfigError(f"privacy key {kid} is not in the key ring {self._path}; it was "
                              "retired while values still used it — restore it from backup") from None

    # ------------------------------------------------------------------ text

    def encrypt_text(self, plain: str, aad: str) -> str:
        kid = self.active
        nonce = secrets.token_bytes(12)
        sealed = self._key(kid).encrypt(nonce, plain.encode(), aad.encode())
        return f"{TEXT_PREFIX}{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt_text(self, token: str, aad: str) -> str:
        if not token.startswith(TEXT_PREFIX):
            return token  # written before encryption was configured
        kid, _, body = token[len(TEXT_PREFIX):].partition(":")
        raw = base64.urlsafe_b64decode(body)
        try:
            return self._key(kid).decrypt(raw[:12], raw[12:], aad.encode()).decode()
        except InvalidTag:
            raise IntegrityError(f"an encrypted value at {aad.split('/')[0]} does not decrypt: "
                                 "it was altered or moved from another row") from None

    # ------------------------------------------------------------------ bytes

    def encrypt_bytes(self, plain: bytes, aad: str) -> bytes:
        kid = self.active.encode()
        nonce = secrets.token_bytes(12)
        sealed = self._key(kid.decode()).encrypt(nonce, plain, aad.encode())
        return BYTES_MAGIC + bytes([len(kid)]) + kid + nonce + sealed

    def decrypt_bytes(self, blob: bytes, aad: str) -> bytes:
        if not blob.startswith(BYTES_MAGIC):
            return blob
        n = blob[len(BYTES_MAGIC)]
        start = len(BYTES_MAGIC) + 1
        kid = blob[start:start + n].decode()
        nonce, sealed = blob[start + n:start + n + 12], blob[start + n + 12:]
        try:
            return self._key(kid).decrypt(nonce, sealed, aad.encode())
        except InvalidTag:
            raise IntegrityError(f"an encrypted value at {aad.split('/')[0]} does not decrypt: "
                                 "it was altered or moved from another row") from None

    @staticmethod
    def key_id(value: str | bytes | None) -> str | None:
        """The key id a stored value is encrypted with; None for clear values."""
        if isinstance(value, str) and value.startswith(TEXT_PREFIX):
            return value[len(TEXT_PREFIX):].partition(":")[0]
        if isinstance(value, bytes) and value.startswith(BYTES_MAGIC):
            n = value[len(BYTES_MAGIC)]
            return value[len(BYTES_MAGIC) + 1:len(BYTES_MAGIC) + 1 + n].decode()
        return None

    def keyed_digest(self, data: bytes) -> str:
        """A keyed hash (BLAKE2b-256 under the index key) of ``data``, hex."""
        return hashlib.blake2b(data, key=self._ring.index_key, digest_size=32).hexdigest()
