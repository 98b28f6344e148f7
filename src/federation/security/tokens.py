"""Bearer tokens for people: a site vouches for its own staff, the gateway issues
short-lived access tokens that any replica can check.

Sites keep their own logins (their HIS accounts); the consortium does not copy them.
The flow follows SMART on FHIR *Backend Services* and the JWT bearer grant of RFC 7523:

1. the site's node (or a tool holding the node's key) signs a **staff assertion**: a JWT
   (RFC 7519), ES256, whose ``x5c`` header (RFC 7515 §4.1.6) carries the node's
   certificate. It names the person (``sub``), their ``site``, staff ``roles``, the SMART
   ``scope`` they need, the ``purpose_of_use`` (HL7 v3 ActReason) and, for break-glass
   (``ETREAT``), the ``reason``. It lives at most :data:`MAX_ASSERTION_SECONDS` and its
   ``jti`` is good for one exchange;
2. ``POST /auth/token`` (``grant_type`` = :data:`JWT_BEARER_GRANT`, ``assertion``)
   checks the certificate's chain to the consortium CA, its validity and the CRL, that it
   is a *node* certificate and that the ``site`` claim is the certificate's own site, the
   signature, ``aud``, ``iat``/``exp``, and that the ``jti`` was never used (checked in the
   store, so every replica agrees); it answers an **access token**: a JWT signed with the
   gateway's own CA-certified key, valid :data:`ACCESS_SECONDS`;
3. requests carry ``Authorization: Bearer <access token>``; any replica verifies it
   without the store — the ``x5c`` gateway certificate chains to the CA and is not revoked,
   the signature, ``aud`` and ``exp`` hold.

Nothing here touches HTTP or SQL: :mod:`federation.gateway.auth_api` wraps it.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federation.errors import AuthenticationError, InvalidInput, PermissionDenied
from federation.security.identity import (
    CONSORTIUM_ROLES,
    SITE_ROLES,
    STAFF_ROLES,
    PeerIdentity,
    identity_from_certificate,
)

__all__ = [
    "ACCESS_SECONDS",
    "CONSORTIUM",
    "CONSORTIUM_ROLES",
    "SITE_ROLES",
    "AUDIENCE",
    "JWT_BEARER_GRANT",
    "MAX_ASSERTION_SECONDS",
    "PURPOSES",
    "STAFF_ROLES",
    "AccessTokens",
    "StaffClaims",
    "TrustAnchor",
    "account_claims",
    "consortium_claims",
    "sign_staff_assertion",
    "verify_staff_assertion",
]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCE = "urn:federation:gateway"
MAX_ASSERTION_SECONDS = 300
ACCESS_SECONDS = 900
#: clocks at township sites drift; tolerated either way
LEEWAY_SECONDS = 60
#: access tokens remembered as verified (a few per signed-in person and quarter hour)
VERIFIED_TOKENS = 10_000

#: the site id of consortium accounts (not a member site: no node, no patients)
CONSORTIUM = "consortium"
#: HL7 v3 ActReason purposes of use the consortium recognises
PURPOSES: dict[str, str] = {
    "TREAT": "treatment",
    "COC": "coordination of care (referral, consultation)",
    "ETREAT": "emergency treatment (break-glass; a reason is required)",
    "HOPERAT": "healthcare operations (statistics, quality)",
    "HCOMPL": "compliance (audit)",
    "HRESCH": "research (de-identified export)",
}
_SCOPE = re.compile(r"^(user|patient|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)$")
_ALGORITHMS = ["ES256"]


@dataclass(frozen=True, slots=True)
class StaffClaims:
    """A person acting at a site, as an assertion or access token states them."""

    user_id: str
    site_id: str
    roles: frozenset[str]
    scopes: frozenset[str]
    purpose: str
    reason: str | None
    token_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime

    @property
    def break_glass(self) -> bool:
        return self.purpose == "ETREAT"

    def allows(self, resource: str, action: str) -> bool:
        """SMART v1 scope check: ``user/Patient.read``, ``user/*.read``, ``user/*.*``."""
        for scope in self.scopes:
            m = _SCOPE.match(scope)
            if m and m[2] in ("*", resource) and m[3] in ("*", action):
                return True
        return False

    def require(self, resource: str, action: str) -> None:
        if not self.allows(resource, action):
            raise PermissionDenied(
                f"the token's scopes ({' '.join(sorted(self.scopes)) or 'none'}) do not "
                f"include user/{resource}.{action}; ask your site for a token with that scope")

    def describe(self) -> str:
        """For logs and audit: ids only."""
        return f"user {self.user_id} at site {self.site_id}"


class TrustAnchor:
    """The consortium CA certificate plus a revocation check (the CRL follower)."""

    def __init__(self, ca_pem: bytes, is_revoked: Callable[[str], object] | None = None) -> None:
        self.ca_pem = ca_pem        # public: pages check signed reports against it
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self._is_revoked = is_revoked or (lambda _serial: None)

    def revoked(self, serial: str) -> bool:
        return bool(self._is_revoked(serial))

    def check(self, cert: x509.Certificate, now: dt.datetime, what: str) -> PeerIdentity:
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            raise AuthenticationError(
                f"the {what} is signed with a certificate the consortium CA did not issue"
            ) from None
        if not cert.not_valid_before_utc - _leeway() <= now <= cert.not_valid_after_utc:
            raise AuthenticationError(
                f"the {what}'s certificate is not valid now (valid "
                f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})")
        identity = identity_from_certificate(cert)
        if self.revoked(identity.serial):
            raise AuthenticationError(
                f"the {what}'s certificate (serial {identity.serial}) has been revoked")
        return identity


def _leeway() -> dt.timedelta:
    return dt.timedelta(seconds=LEEWAY_SECONDS)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _x5c(cert: x509.Certificate) -> list[str]:
    return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]


def _header_cert(token: str, what: str) -> x509.Certificate:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthenticationError(f"the {what} is not a JSON Web Token") from None
    if header.get("alg") not in _ALGORITHMS:
        raise AuthenticationError(f"the {what} must be signed with ES256, not "
                                  f"{header.get('alg')!r}")
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        raise AuthenticationError(f"the {what} carries no x5c certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except ValueError:
        raise AuthenticationError(f"the {what}'s x5c certificate is unreadable") from None


def _decode(token: str, cert: x509.Certificate, what: str, issuer: str) -> dict[str, object]:
    try:
        return jwt.decode(token, cert.public_key(), algorithms=_ALGORITHMS, audience=AUDIENCE,
                          issuer=issuer, leeway=LEEWAY_SECONDS,
                          options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]})
    except jwt.ExpiredSignatureError:
        raise AuthenticationError(f"the {what} has expired; get a new one") from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError(f"the {what} is not addressed to the gateway "
                                  f"(aud must be {AUDIENCE})") from None
    except jwt.InvalidIssuerError:
        raise AuthenticationError(f"the {what}'s issuer does not match its certificate") from None
    except jwt.InvalidSignatureError:
        raise AuthenticationError(f"the {what}'s signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"the {what} is not acceptable: {exc}") from None


def _claims(body: dict[str, object], site_id: str, what: str,
            allowed: tuple[str, ...] = STAFF_ROLES) -> StaffClaims:
    roles = body.get("roles")
    if not isinstance(roles, list) or not roles or not set(roles) <= set(allowed):
        raise AuthenticationError(f"the {what} must list staff roles from {', '.join(allowed)}"
                                  + ("; regional administrators and auditors sign in with "
                                     "their consortium account" if allowed == SITE_ROLES
                                     else ""))
    scope = body.get("scope")
    scopes = frozenset(str(scope).split()) if scope else frozenset()
    bad = [s for s in scopes if not _SCOPE.match(s)]
    if bad:
        raise AuthenticationError(f"the {what} has malformed SMART scopes: {' '.join(bad)}")
    purpose = body.get("purpose_of_use")
    if purpose not in PURPOSES:
        raise AuthenticationError(f"the {what}'s purpose_of_use must be one of "
                                  f"{', '.join(PURPOSES)}")
    reason = body.get("reason")
    if purpose == "ETREAT" and not (isinstance(reason, str) and reason.strip()):
        raise AuthenticationError("break-glass (ETREAT) needs a reason in the token")
    iat, exp = body["iat"], body["exp"]
    return StaffClaims(
        user_id=str(body["sub"]), site_id=site_id, roles=frozenset(map(str, roles)),
        scopes=scopes, purpose=str(purpose), reason=str(reason) if reason else None,
        token_id=str(body["jti"]),
        issued_at=dt.datetime.fromtimestamp(int(iat), dt.UTC),  # type: ignore[call-overload]
        expires_at=dt.datetime.fromtimestamp(int(exp), dt.UTC))  # type: ignore[call-overload]


def consortium_claims(user_id: str, roles: Iterable[str], scopes: Iterable[str],
                      purpose: str, reason: str | None = None) -> StaffClaims:
    """Claims of a consortium account that signed in with its password."""
    roles = frozenset(roles)
    if not roles or not roles <= set(CONSORTIUM_ROLES):
        raise InvalidInput(f"consortium accounts hold {', '.join(CONSORTIUM_ROLES)} only")
    body: dict[str, object] = {
        "sub": user_id, "roles": sorted(roles), "scope": " ".join(sorted(set(scopes))),
        "purpose_of_use": purpose, "reason": reason, "jti": uuid.uuid4().hex,
        "iat": int(_now(None).timestamp()), "exp": int(_now(None).timestamp()) + ACCESS_SECONDS}
    return _claims(body, CONSORTIUM, "sign-in", CONSORTIUM_ROLES)


def account_claims(user_id: str, site_id: str | None, roles: Iterable[str],
                   scopes: Iterable[str], purpose: str,
                   reason: str | None = None) -> StaffClaims:
    """Claims of an account the gateway keeps that signed in with its password: a
    consortium account (``site_id`` None) or a site staff member's console account, who
    then acts at their site exactly as a site-vouched assertion would let them."""
    if site_id is None:
        return consortium_claims(user_id, roles, scopes, purpose, reason)
    body: dict[str, object] = {
        "sub": user_id, "roles": sorted(set(roles)), "scope": " ".join(sorted(set(scopes))),
        "purpose_of_use": purpose, "reason": reason, "jti": uuid.uuid4().hex,
        "iat": int(_now(None).timestamp()), "exp": int(_now(None).timestamp()) + ACCESS_SECONDS}
    return _claims(body, site_id, "sign-in", SITE_ROLES)


def sign_staff_assertion(
    key_pem: bytes, cert_pem: bytes, *, user_id: str, roles: Iterable[str],
    scopes: Iterable[str], purpose: str, reason: str | None = None,
    lifetime: int = MAX_ASSERTION_SECONDS, now: dt.datetime | None = None,
) -> str:
    """A node's assertion that ``user_id`` is one of its staff (what a site's login
    system or the node agent produces for its users)."""
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose of use must be one of {', '.join(PURPOSES)}")
    cert = x509.load_pem_x509_certificate(cert_pem)
    identity = identity_from_certificate(cert)
    if identity.role != "node" or identity.site_id is None:
        raise InvalidInput("staff assertions are signed with the site's node certificate")
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("the node key must be an EC P-256 key")
    issued = _now(now)
    body: dict[str, object] = {
        "iss": f"urn:federation:site:{identity.site_id}", "sub": user_id,
        "aud": AUDIENCE, "site": identity.site_id, "roles": sorted(set(roles)),
        "scope": " ".join(sorted(set(scopes))), "purpose_of_use": purpose,
        "iat": int(issued.timestamp()), "exp": int(issued.timestamp()) + lifetime,
        "jti": uuid.uuid4().hex}
    if reason:
        body["reason"] = reason
    return jwt.encode(body, key, algorithm="ES256", headers={"x5c": _x5c(cert)})


def verify_staff_assertion(assertion: str, trust: TrustAnchor, *,
                           now: dt.datetime | None = None) -> StaffClaims:
    """Check a staff assertion (everything but its one-time use, which needs the store)."""
    at = _now(now)
    cert = _header_cert(assertion, "staff assertion")
    identity = trust.check(cert, at, "staff assertion")
    if identity.role != "node" or identity.site_id is None:
        raise AuthenticationError("staff assertions must be signed by a site's node "
                                  f"certificate, not a {identity.role} certificate")
    body = _decode(assertion, cert, "staff assertion", f"urn:federation:site:{identity.site_id}")
    if body.get("site") != identity.site_id:
        raise PermissionDenied(f"site {identity.site_id} may only vouch for its own staff, "
                               f"not for site {body.get('site')!r}")
    if int(body["exp"]) - int(body["iat"]) > MAX_ASSERTION_SECONDS:  # type: ignore[call-overload]
        raise AuthenticationError(f"staff assertions may live at most "
                                  f"{MAX_ASSERTION_SECONDS} s")
    return _claims(body, identity.site_id, "staff assertion", SITE_ROLES)


class AccessTokens:
    """Issues and checks the gateway's access tokens (signed with its TLS key)."""

    ISSUER = "urn:federation:gateway"

    def __init__(self, key_pem: bytes, cert_pem: bytes, trust: TrustAnchor, *,
                 lifetime: int = ACCESS_SECONDS) -> None:
        self._key = serialization.load_pem_private_key(key_pem, password=None)
        self._cert = x509.load_pem_x509_certificate(cert_pem)
        if identity_from_certificate(self._cert).role != "gateway":
            raise InvalidInput("access tokens are signed with the gateway's certificate")
        self._trust = trust
        self.lifetime = lifetime
        #: tokens already verified: token → (claims, signing certificate's serial and end)
        self._verified: dict[str, tuple[StaffClaims, str, dt.datetime]] = {}
        self._verified_lock = threading.Lock()

    def issue(self, claims: StaffClaims, *, now: dt.datetime | None = None) -> tuple[str, int]:
        issued = _now(now)
        lifetime = min(self.lifetime, ACCESS_SECONDS)
        body: dict[str, object] = {
            "iss": self.ISSUER, "sub": claims.user_id, "aud": AUDIENCE,
            "site": claims.site_id, "roles": sorted(claims.roles),
            "scope": " ".join(sorted(claims.scopes)), "purpose_of_use": claims.purpose,
            "iat": int(issued.timestamp()), "exp": int(issued.timestamp()) + lifetime,
            "jti": uuid.uuid4().hex, "assertion": claims.token_id}
        if claims.reason:
            body["reason"] = claims.reason
        token = jwt.encode(body, self._key, algorithm="ES256",  # type: ignore[arg-type]
                           headers={"x5c": _x5c(self._cert)})
        return token, lifetime

    def verify(self, token: str, *, now: dt.datetime | None = None) -> StaffClaims:
        """The token's claims, or AuthenticationError. Every request carries its token, so
        a token verified once is remembered: a later call re-checks only what can change
        (the time against its expiry and its certificate's, the certificate's revocation);
        the signatures cannot, and are not verified again."""
        at = _now(now)
        known = self._verified.get(token)
        if known is not None:
            claims, serial, cert_end = known
            if at <= min(claims.expires_at, cert_end) + _leeway() \
                    and not self._trust.revoked(serial):
                return claims
        cert = _header_cert(token, "access token")
        identity = self._trust.check(cert, at, "access token")
        if identity.role != "gateway":
            raise AuthenticationError("access tokens are issued by the gateway only; "
                                      "exchange your site's assertion at /auth/token")
        body = _decode(token, cert, "access token", self.ISSUER)
        site = body.get("site")
        if not isinstance(site, str):
            raise AuthenticationError("the access token names no site")
        claims = _claims(body, site, "access token")
        if at > claims.expires_at + _leeway():      # ``now`` given: that instant decides
            raise AuthenticationError("the access token has expired; get a new one")
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_TOKENS:
                self._verified.pop(next(iter(self._verified)), None)    # the oldest
            self._verified[token] = (claims, identity.serial, cert.not_valid_after_utc)
        return claims
