"""Staff assertions and access tokens: what a site may vouch for, and every way a token
is refused (expired, replayed, foreign, tampered, another site's, wrong signer)."""

from __future__ import annotations

import base64
import datetime as dt
import json

import httpx
import pytest

from federation.errors import AuthenticationError, InvalidInput, PermissionDenied
from federation.security.tokens import (
    JWT_BEARER_GRANT,
    AccessTokens,
    TrustAnchor,
    sign_staff_assertion,
    verify_staff_assertion,
)
from tests.conftest import Pki

DOCTOR = {"user_id": "wang.li", "roles": ["doctor"],
          "scopes": ["user/Patient.read", "user/ServiceRequest.write"], "purpose": "TREAT"}


def _files(pki: Pki, name: str) -> tuple[bytes, bytes]:
    t = pki.tls(name)
    return t.key.read_bytes(), t.cert.read_bytes()


def _trust(pki: Pki) -> TrustAnchor:
    return TrustAnchor(pki.tls("gateway").ca.read_bytes())


def _assert(pki: Pki, site: str = "county-a", **over) -> str:
    key, cert = _files(pki, site)
    return sign_staff_assertion(key, cert, **(DOCTOR | over))


def _tamper(token: str, **claims) -> str:
    head, body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data.update(claims)
    new = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{sig}"


def test_a_node_vouches_for_its_own_staff(pki: Pki) -> None:
    claims = verify_staff_assertion(_assert(pki), _trust(pki))
    assert (claims.user_id, claims.site_id, claims.purpose) == ("wang.li", "county-a", "TREAT")
    assert claims.allows("Patient", "read") and claims.allows("ServiceRequest", "write")
    assert not claims.allows("Patient", "write")
    with pytest.raises(PermissionDenied, match="user/Patient.write"):
        claims.require("Patient", "write")


@pytest.mark.parametrize(("case", "message"), [
    ("expired", "expired"),
    ("tampered", "signature"),
    ("other-site", "only vouch for its own staff"),
    ("foreign-ca", "did not issue"),
    ("expired-cert", "not valid now"),
    ("operator-cert", "node certificate"),
    ("too-long", "at most"),
    ("break-glass-no-reason", "reason"),
    ("no-roles", "staff roles"),
    ("consortium-role", "consortium account"),
    ("bad-scope", "malformed"),
])
def test_assertions_are_refused(pki: Pki, case: str, message: str) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    key, cert = _files(pki, "county-a")
    if case == "expired":
        token = _assert(pki, now=past)
    elif case == "tampered":
        token = _tamper(_assert(pki), roles=["regional-admin"])
    elif case == "other-site":
        token = _resign(pki, _assert(pki), site="city-1")   # validly signed by county-a
    elif case == "foreign-ca":
        token = _assert(pki, site="foreign")
    elif case == "expired-cert":
        token = _assert(pki, site="expired")
    elif case == "operator-cert":
        # an operator certificate cannot even sign one; forge the header's x5c instead
        okey, ocert = _files(pki, "tester")
        with pytest.raises(InvalidInput):
            sign_staff_assertion(okey, ocert, **DOCTOR)
        token = _swap_x5c(_assert(pki), ocert)
    elif case == "too-long":
        token = sign_staff_assertion(key, cert, lifetime=3600, **DOCTOR)
    elif case == "break-glass-no-reason":
        token = _assert(pki, purpose="ETREAT")
    elif case == "no-roles":
        token = _assert(pki, roles=[])
    elif case == "consortium-role":
        token = _assert(pki, roles=["regional-admin"])
    else:
        token = _assert(pki, scopes=["Patient.read"])
    with pytest.raises((AuthenticationError, PermissionDenied), match=message):
        verify_staff_assertion(token, _trust(pki))


def _resign(pki: Pki, token: str, **claims) -> str:
    import jwt
    from cryptography.hazmat.primitives import serialization
    head, body, _sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) | claims
    key = serialization.load_pem_private_key(_files(pki, "county-a")[0], password=None)
    return jwt.encode(data, key, algorithm="ES256", headers={"x5c": header["x5c"]})


def _swap_x5c(token: str, cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    head, body, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    header["x5c"] = [base64.b64encode(der).decode()]
    new = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{new}.{body}.{sig}"


def test_revoked_node_certificate_cannot_vouch(private_pki: Pki) -> None:
    token = _assert(private_pki, site="county-b")
    serial = next(r.serial for r in private_pki.ca.list_issued()
                  if r.kind == "node" and r.name == "county-b" and r.tier == "county")
    private_pki.ca.revoke(serial, reason="key_compromise")
    revoked = {serial}
    trust = TrustAnchor(private_pki.tls("gateway").ca.read_bytes(),
                        lambda s: s if s in revoked else None)
    with pytest.raises(AuthenticationError, match="revoked"):
        verify_staff_assertion(token, trust)


def test_access_tokens_are_signed_by_the_gateway_only(pki: Pki) -> None:
    trust = _trust(pki)
    gkey, gcert = _files(pki, "gateway")
    tokens = AccessTokens(gkey, gcert, trust)
    claims = verify_staff_assertion(_assert(pki), trust)
    token, lifetime = tokens.issue(claims)
    again = tokens.verify(token)
    assert (again.user_id, again.site_id, again.scopes) == ("wang.li", "county-a", claims.scopes)
    assert lifetime <= 900
    # a site's assertion is not an access token, and a node key cannot mint one
    with pytest.raises(AuthenticationError, match="issued by the gateway only"):
        tokens.verify(_assert(pki))
    nkey, ncert = _files(pki, "county-a")
    with pytest.raises(InvalidInput):
        AccessTokens(nkey, ncert, trust)
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.verify(tokens.issue(claims, now=dt.datetime.now(dt.UTC)
                                   - dt.timedelta(hours=2))[0])


async def test_sign_in_over_http(gateway, pki: Pki) -> None:
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        assertion = _assert(pki)
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        ok = await http.post("/auth/token", data=form)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] <= 900
        assert ok.headers["cache-control"] == "no-store"
        claims = AccessTokens(*_files(pki, "gateway"), _trust(pki)).verify(body["access_token"])
        assert claims.user_id == "wang.li"
        # the same assertion twice: refused (one-time jti, checked in the store)
        replay = await http.post("/auth/token", data=form)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert "already used" in replay.json()["error_description"]
        wrong = await http.post("/auth/token", data={"grant_type": "client_credentials",
                                                     "assertion": assertion})
        assert wrong.json()["error"] == "unsupported_grant_type"
        foreign = await http.post("/auth/token", data={"grant_type": JWT_BEARER_GRANT,
                                                       "assertion": _assert(pki, site="foreign")})
        assert foreign.status_code == 400 and "did not issue" in foreign.text
        as_json = await http.post("/auth/token", json=form)
        assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    rows = gateway.store.list_exchanges(limit=10)
    signins = [r for r in rows if r.operation == "POST /auth/token"]
    assert [r.outcome for r in signins].count("ok") == 1
    assert [r.outcome for r in signins].count("refused") == 2
    assert all("wang" not in r.detail for r in signins)


async def test_token_cli_signs_in_a_person(gateway, pki: Pki) -> None:
    import asyncio

    from click.testing import CliRunner

    from federation.cli import cli
    args = ["token", "get", "--node-cert", str(pki.root / "county-a"), "--user", "zhao.min",
            "--role", "nurse", "--scope", "user/Patient.read",
            "--gateway-url", f"http://127.0.0.1:{gateway.http_port}"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code == 0, result.output
    token = json.loads(result.output)["access_token"]
    claims = AccessTokens(*_files(pki, "gateway"), _trust(pki)).verify(token)
    assert (claims.user_id, claims.roles) == ("zhao.min", {"nurse"})
    refused = await asyncio.to_thread(CliRunner().invoke, cli, args[:-2] + [
        "--purpose", "ETREAT", "--gateway-url", f"http://127.0.0.1:{gateway.http_port}"])
    assert refused.exit_code == 2 and "reason" in refused.output


async def test_consortium_accounts_sign_in_with_a_password(gateway) -> None:
    from federation.security.accounts import hash_password

    stored = hash_password("a long enough password")
    assert stored.startswith("$argon2id$") and "a long enough" not in stored
    gateway.store.put_account("auditor1", ["auditor"], stored, dt.datetime.now(dt.UTC))
    base = f"http://127.0.0.1:{gateway.http_port}"
    form = {"grant_type": "password", "username": "auditor1",
            "password": "a long enough password", "purpose_of_use": "HCOMPL"}
    async with httpx.AsyncClient(base_url=base) as http:
        ok = await http.post("/auth/token", data=form)
        assert ok.status_code == 200, ok.text
        wrong = await http.post("/auth/token", data=form | {"password": "guess guess guess"})
        nobody = await http.post("/auth/token", data=form | {"username": "nobody"})
        # the same words for a wrong password and an unknown user: no account enumeration
        assert wrong.json() == nobody.json()
        assert wrong.json()["error_description"] == "wrong user name or password"
        gateway.store.disable_account("auditor1")
        disabled = await http.post("/auth/token", data=form)
        assert disabled.status_code == 400
    with pytest.raises(InvalidInput, match="12 characters"):
        hash_password("short")


def test_account_cli_keeps_only_a_hash(tmp_path) -> None:
    from click.testing import CliRunner
    from sqlalchemy import text

    from federation.cli import cli
    from federation.store import make_engine
    config = tmp_path / "gateway.toml"
    config.write_text('database_url = "sqlite:///gw.db"\n[tls]\ncert = "x"\nkey = "x"\n'
                      'ca = "x"\n')
    run = CliRunner().invoke
    added = run(cli, ["account", "add", "li.admin", "--role", "regional-admin",
                      "--config", str(config)], input="secret secret 42\nsecret secret 42\n")
    assert added.exit_code == 0, added.output
    short = run(cli, ["account", "add", "x.admin", "--role", "auditor", "--config", str(config),
                      "--password", "short"])
    assert short.exit_code == 2 and "12 characters" in short.output
    listed = run(cli, ["account", "list", "--config", str(config)])
    assert "li.admin" in listed.output and "regional-admin" in listed.output
    engine = make_engine(f"sqlite:///{tmp_path}/gw.db")
    with engine.connect() as c:
        stored = c.execute(text("SELECT password_hash FROM gateway_account")).scalar_one()
    assert stored.startswith("$argon2id$") and "secret" not in stored
    gone = run(cli, ["account", "disable", "nobody", "--config", str(config)])
    assert gone.exit_code == 2 and "no consortium account" in gone.output


def test_rate_limiter_refills_and_says_when_to_retry() -> None:
    from federation.errors import RateLimited
    from federation.security.limits import RateLimiter
    now = [0.0]
    limiter = RateLimiter(2.0, 3, what="user", clock=lambda: now[0])
    for _ in range(3):
        limiter.take("county-a/wang")
    with pytest.raises(RateLimited, match="try again in 1 s") as refused:
        limiter.take("county-a/wang")
    assert refused.value.retry_after == 1
    limiter.take("county-a/li")               # another person has their own bucket
    now[0] += 0.5                              # one token back
    limiter.take("county-a/wang")
    with pytest.raises(RateLimited):
        limiter.take("county-a/wang")


async def test_http_limits_answer_429_with_retry_after(pki, consortium, tmp_path) -> None:
    import dataclasses

    from federation.gateway.app import start_gateway
    from tests.conftest import bearer, gateway_settings, staff_token
    settings = dataclasses.replace(
        gateway_settings(pki, f"sqlite:///{tmp_path}/gw.db", consortium),
        http_rate_per_user=1.0, signin_rate_per_minute=3.0)
    gw = await start_gateway(settings)
    try:
        import asyncio
        token = await asyncio.to_thread(staff_token, gw, pki)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}") as http:
            answers = [await http.get("/api/consortium", headers=bearer(token))
                       for _ in range(5)]
            codes = [a.status_code for a in answers]
            assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
            limited = next(a for a in answers if a.status_code == 429)
            assert int(limited.headers["retry-after"]) >= 1
            assert "too many requests" in limited.json()["issue"][0]["diagnostics"]
            signins = [await http.post("/auth/token", data={"grant_type": "password",
                                                            "username": "x", "password": "y"})
                       for _ in range(3)]
            assert signins[-1].status_code == 429
            assert signins[-1].json()["error"] == "slow_down"
    finally:
        await gw.stop(0.1)


async def test_grpc_limits_one_certificate_not_the_others(pki, consortium, tmp_path) -> None:
    import dataclasses

    import grpc

    from federation._proto.v1 import diagnostics_pb2, diagnostics_pb2_grpc
    from federation.gateway.app import start_gateway
    from federation.rpc.channels import secure_channel
    from federation.security.ca import GATEWAY_SERVER_NAME
    from tests.conftest import gateway_settings
    settings = dataclasses.replace(
        gateway_settings(pki, f"sqlite:///{tmp_path}/gw.db", consortium), grpc_rate_per_node=1.0)
    gw = await start_gateway(settings)
    try:
        async def calls(site: str, n: int) -> list[grpc.StatusCode | None]:
            out: list[grpc.StatusCode | None] = []
            async with secure_channel(f"127.0.0.1:{gw.grpc_port}", pki.material(site), 1 << 20,
                                      server_name=GATEWAY_SERVER_NAME) as channel:
                stub = diagnostics_pb2_grpc.DiagnosticsStub(channel)
                for _ in range(n):
                    try:
                        answer = await stub.CheckCaller(diagnostics_pb2.CheckCallerRequest())
                        assert answer.name == site
                        out.append(None)
                    except grpc.aio.AioRpcError as err:
                        assert "too many requests from certificate " + site in err.details()
                        assert "try again in" in err.details()
                        out.append(err.code())
            return out

        busy = await calls("county-a", 6)
        assert busy[:3] == [None, None, None]          # a burst of 3 × the rate
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in busy[3:]
        assert await calls("city-1", 3) == [None, None, None]   # another site is not slowed
    finally:
        await gw.stop(0.1)


def test_a_verified_token_is_remembered_but_still_expires_and_is_revoked(
        private_pki: Pki) -> None:
    revoked: set[str] = set()
    trust = TrustAnchor(private_pki.tls("gateway").ca.read_bytes(),
                        lambda s: s if s in revoked else None)
    gkey, gcert = _files(private_pki, "gateway")
    tokens = AccessTokens(gkey, gcert, trust)
    token, _ = tokens.issue(verify_staff_assertion(_assert(private_pki), trust))
    first = tokens.verify(token)
    assert tokens.verify(token) is first                  # remembered, not verified again
    # a changed token is another token: verified in full, and refused
    with pytest.raises(AuthenticationError, match="signature does not verify"):
        tokens.verify(_tamper(token, site="city-1"))
    # the time still counts: past its expiry (and the leeway) it is refused
    late = first.expires_at + dt.timedelta(seconds=61)
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.verify(token, now=late)
    # the gateway certificate revoked: every token it signed is refused at once
    revoked.add(next(r.serial for r in private_pki.ca.list_issued() if r.kind == "gateway"))
    with pytest.raises(AuthenticationError, match="revoked"):
        tokens.verify(token)
