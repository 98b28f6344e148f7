"""Consortium accounts the gateway keeps itself: regional administrators and auditors.

Site staff sign in through their own site (:mod:`federation.security.tokens`); the
consortium's own people have no site to vouch for them, so the gateway keeps their
accounts. Passwords are stored only as **Argon2id** hashes (RFC 9106; memory-hard, the
OWASP-recommended password KDF), with the library's parameters recorded in each hash so
that a later, stronger setting re-hashes on the next sign-in.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from federation.errors import AuthenticationError, InvalidInput

__all__ = ["MIN_PASSWORD", "hash_password", "needs_rehash", "verify_password"]

MIN_PASSWORD = 12
# RFC 9106 §4 second recommended option: 64 MiB, 3 passes, 4 lanes
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)
#: verified against when the account does not exist, so that a wrong user name costs
#: as long as a wrong password (no account enumeration by timing)
_DUMMY = _HASHER.hash("no such account, but the same cost")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> None:
    """Raise :class:`AuthenticationError` unless ``password`` matches ``stored_hash``
    (``None``: no such account — checked against a dummy hash all the same)."""
    try:
        _HASHER.verify(stored_hash or _DUMMY, password)
    except (VerificationError, InvalidHashError):
        raise AuthenticationError("wrong user name or password") from None
    if stored_hash is None:
        raise AuthenticationError("wrong user name or password")


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)
