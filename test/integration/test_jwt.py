"""JWT logins (issue P8, first part): the password is a compact JWS that
pgtenant verifies with the keys of jwt_key_file / jwt_secret_file, and whose
claims name the tenant (and, optionally, the user).

Keys are made by the suite with `openssl` (RSA 2048, EC P-256, EC P-384,
Ed25519) and published as a JWKS document (several keys, one kid each) or a
PEM file; tokens are signed by the test with PyJWT, or put together by hand
for what PyJWT will not make (alg none, an HMAC keyed with a public key PEM,
broken encodings).  See jwtkeys.py.

JWT logins over plaintext TCP are refused unless jwt_allow_plaintext = yes,
so the logins here go over TLS (client_tls_sslmode = prefer, a certificate
from tlscerts.py), except where plaintext and unix sockets are the subject.
libpq (psycopg) sends the token as the cleartext password pgtenant asks
for; asyncpg or the raw wire client report the SQLSTATE of a refusal.
"""
import asyncio
import base64
import json
import re
import shutil
import struct
import tempfile
import threading
import time
import types

import asyncpg
import psycopg
import pytest

import pgwire
from conftest import APP_PASSWORD, free_port
from jwtkeys import UNSET, KeySet, b64url, b64url_json, claims, flip_signature, hand_made, hmac_token, sign, \
    sign_bytes, sign_input, sized_token, tamper_payload
from test_metrics import parse, scrape
from tlscerts import CertMaker, client_context, tls_connect

ISS_A = "https://issuer-a.example.com/pool-a"
ISS_B = "https://issuer-b.example.com/pool-b"
AUD = "client-aud-1"
AUD2 = "client-aud-2"
ALL_ALGS = "RS256, RS384, RS512, PS256, ES256, ES384, EdDSA, HS256"
TENANTS = ("acme", "globex", "initech")
SEARCH_PATH = '"tenant_%s", public'


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeySet(tmp_path_factory.mktemp("jwtkeys"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    m = CertMaker(tmp_path_factory.mktemp("jwttls"))
    ca = m.ca("ca", "pgtenant jwt test CA")
    server = m.issue("pgtenant", "pgtenant", ca, ("DNS:localhost", "IP:127.0.0.1"))
    return types.SimpleNamespace(ca=ca, server=server)


@pytest.fixture(scope="module")
def schemas(pg):
    with pg.connect("appdb", "app") as conn:
        for t in TENANTS:
            conn.execute("drop schema if exists tenant_%s cascade" % t)
            conn.execute("create schema tenant_%s" % t)
            conn.execute("create table tenant_%s.items(id int, owner text)" % t)
            conn.execute("insert into tenant_%s.items select g, '%s' from generate_series(1, 3) g" % (t, t))
    return TENANTS


@pytest.fixture(scope="module")
def ro_role(pg):
    """A second server role (trust from 127.0.0.1 in conftest's pg_hba) for jwt_user_map."""
    pg.sql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jwt_ro') THEN "
           "CREATE ROLE jwt_ro LOGIN; END IF; END$$")
    return "jwt_ro"


def jwt_bouncer(factory, keys, certs, settings=None, tenants=None, databases=None):
    """pgtenant with auth_type = jwt, the JWKS file and the HMAC secret,
    every algorithm the tests sign with allowed, issuer ISS_A, audience AUD,
    TLS offered to clients (prefer), tenant required, no failure delay."""
    s = {"auth_type": "jwt", "jwt_key_file": keys.jwks, "jwt_secret_file": keys.secret_file,
         "jwt_algorithms": ALL_ALGS, "jwt_issuer": ISS_A, "jwt_audience": AUD,
         "tenant_required": "yes", "tenant_setting": "app.tenant_id", "auth_failure_delay": "0",
         "client_tls_sslmode": "prefer", "client_tls_cert_file": certs.server.cert,
         "client_tls_key_file": certs.server.key}
    s.update(settings or {})
    t = {x: "pool_size=2" for x in TENANTS}
    t.update(tenants or {})
    return factory(settings=s, tenants=t, databases=databases)


# ---------------------------------------------------------------- helpers

def token(keys, alg="RS256", tenant="acme", key=None, kid=UNSET, headers=None, **kw):
    """A good token (iss ISS_A, aud AUD, sub app, 5 minutes) with kw claims changed."""
    kw.setdefault("iss", ISS_A)
    kw.setdefault("aud", AUD)
    return sign(keys, claims(tenant=tenant, **kw), alg, key=key, kid=kid, headers=headers)


def tls(b, tok, user="app", dbname="appdb", **kw):
    """psycopg over TLS with the token as the password."""
    return b.connect(user=user, dbname=dbname, password=tok, sslmode="require", **kw)


def where(conn):
    """(owners of the rows the client sees, search_path, app.tenant_id, current_user)."""
    owners = {r[0] for r in conn.execute("select owner from items")}
    sp = conn.execute("show search_path").fetchone()[0]
    tid, user = conn.execute("select current_setting('app.tenant_id', true), current_user").fetchone()
    return owners, sp, tid, user


def assert_in_tenant(conn, tenant, user="app"):
    assert where(conn) == ({tenant}, SEARCH_PATH % tenant, tenant, user)


def attempt(b, password, user="app", dbname="appdb", tls=True, server_settings=None, host="127.0.0.1"):
    """Log in with asyncpg (TLS unless tls=False) and ask where the session
    landed.  Returns (None, (tenant setting, search_path, current_user)) on
    success, (sqlstate, message) for an ErrorResponse, ("failed", why) when
    the connection broke without one."""
    async def run():
        try:
            conn = await asyncpg.connect(host=host, port=b.port, user=user, database=dbname, password=password,
                                         ssl=client_context() if tls else False,
                                         server_settings=server_settings or {}, statement_cache_size=0,
                                         timeout=10)
        except asyncpg.PostgresError as e:
            return e.sqlstate, e.args[0] if e.args else str(e)
        except Exception as e:  # noqa: BLE001 - resets, EOF, handshake failures
            return "failed", repr(e)
        try:
            row = await conn.fetchrow("select current_setting('app.tenant_id', true), "
                                      "current_setting('search_path'), current_user::text")
            return None, tuple(row)
        except asyncpg.PostgresError as e:
            return e.sqlstate, e.args[0] if e.args else str(e)
        finally:
            await conn.close()

    return asyncio.run(run())


def ok_in(tenant, user="app"):
    return None, (tenant, SEARCH_PATH % tenant, user)


REFUSAL = re.compile(r"invalid token: (.*)", re.S)


def reason_of(result):
    """The reason of a 28P01 "invalid token: <reason>" refusal, else None."""
    code, msg = result
    if code != "28P01" or not isinstance(msg, str):
        return None
    m = REFUSAL.fullmatch(msg)
    return m.group(1) if m else None


def reason_is(result, reason):
    """result is FATAL 28P01 "invalid token: <reason>": exactly these words,
    then the end or a detail after a space or punctuation (e.g. "missing
    tenant claim custom:tenant_id"), not a longer word."""
    r = reason_of(result)
    return r is not None and re.fullmatch(re.escape(reason) + r"(?:[\s(:;,].*)?", r, re.S) is not None


def check_cases(b, cases):
    """cases: [(name, password, expected, kwargs for attempt)], expected a
    refusal reason (str) or a list of acceptable reasons, ("08004", message
    prefix), or a tenant ("ok", t).  Returns the list of mismatches (so
    that a failure shows all of them)."""
    bad = []
    for name, password, want, kw in cases:
        got = attempt(b, password, **kw)
        if isinstance(want, str):
            good = reason_is(got, want)
        elif isinstance(want, list):
            good = any(reason_is(got, w) for w in want)
        elif want[0] == "ok":
            good = got == ok_in(want[1], *want[2:])
        else:
            good = got[0] == want[0] and isinstance(got[1], str) and got[1].startswith(want[1])
        if not good:
            bad.append((name, want, got))
    return bad


def raw_jwt_login(b, password, tls=True, user="app", dbname="appdb", params=None):
    """The wire protocol by hand: startup, then password when asked (code 3).
    Returns (authentication request codes seen, ErrorResponse fields or None
    once ReadyForQuery came).  A password whose sending fails (the server
    refused before reading it all) is not an error: the answer is read anyway."""
    s = tls_connect(b.port) if tls else pgwire.connect(b)
    try:
        p = {"user": user, "database": dbname}
        p.update(params or {})
        s.sendall(pgwire.startup_packet(p))
        asked = []
        while True:
            t, body = pgwire.recv_msg(s)
            if t == b"E":
                return asked, pgwire.error_fields(body)
            if t == b"Z":
                return asked, None
            if t == b"R":
                code = struct.unpack("!I", body[:4])[0]
                asked.append(code)
                if code == 3:
                    data = password if isinstance(password, bytes) else password.encode()
                    try:
                        s.sendall(pgwire.msg(b"p", data + b"\0"))
                    except OSError:
                        pass
                elif code != 0:
                    return asked, {"C": "unexpected", "M": "authentication request %d" % code}
    finally:
        s.close()


def assert_not_logged(b, tokens):
    """No token, and no token's signature or payload part, is in the log."""
    log = b.log()
    assert log, "pgtenant wrote no log"
    for t in tokens:
        parts = t.split(".")
        for piece in [t] + [p for p in parts[1:] if len(p) >= 16]:
            assert piece[:200] not in log, "a token (or part of one) is in the log: %s..." % piece[:40]


# ---------------------------------------------------------------- good tokens

def test_each_algorithm_logs_in_to_the_tenant_of_its_claim(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs)
    used = []
    algs = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256"]
    for i, alg in enumerate(algs):
        tenant = TENANTS[i % 3]
        tok = token(keys, alg, tenant)
        used.append(tok)
        with tls(b, tok) as conn:
            assert conn.info.pgconn.ssl_in_use
            assert_in_tenant(conn, tenant)
    # the same again through asyncpg, which also checks the SQLSTATE path is clean
    for alg in algs:
        tok = token(keys, alg, "globex")
        used.append(tok)
        assert attempt(b, tok) == ok_in("globex"), alg
    # kid-less tokens try every key of the right type
    for alg in ("RS256", "ES256", "EdDSA", "ES384"):
        tok = token(keys, alg, "initech", kid=None)
        used.append(tok)
        assert attempt(b, tok) == ok_in("initech"), alg
    # the pools are per tenant
    pools = {(p["database"], p["tenant"]) for p in b.admin("SHOW POOLS")}
    assert {("appdb", t) for t in TENANTS} <= pools
    assert_not_logged(b, used)


def test_keys_are_bound_to_their_type_and_alg(bouncer_factory, keys, certs, schemas):
    """A JWKS key with "alg" serves only that alg; a kid naming a key of
    another type or curve does not verify; keys are found by kid."""
    b = jwt_bouncer(bouncer_factory, keys, certs)
    assert attempt(b, token(keys, "RS256", kid="rsa-rs256")) == ok_in("acme")
    cases = [
        ("RS512 with the RS256-only key", token(keys, "RS512", kid="rsa-rs256"), None),
        ("PS256 with the RS256-only key", token(keys, "PS256", kid="rsa-rs256"), None),
        ("ES384 signed by P-384 naming the P-256 kid", token(keys, "ES384", kid="ec256-1"), None),
        ("ES256 signed by P-256 naming the RSA kid", token(keys, "ES256", kid="rsa-1"), None),
        ("EdDSA naming the RSA kid", token(keys, "EdDSA", kid="rsa-1"), None),
        ("RS256 naming the Ed25519 kid", token(keys, "RS256", kid="ed-1"), None),
    ]
    allowed = ("unknown key", "bad signature", "algorithm not allowed")
    bad = []
    for name, tok, _ in cases:
        got = attempt(b, tok)
        if not any(reason_is(got, r) for r in allowed):
            bad.append((name, got))
    assert not bad, bad


def test_pem_key_file(bouncer_factory, keys, certs, schemas):
    """A PEM file of several public keys (no kids): a token with any kid or
    none is tried against the keys of its type."""
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"jwt_key_file": keys.pem})
    cases = [
        ("RS256 with a kid", token(keys, "RS256", "acme"), ("ok", "acme")),
        ("RS256 without kid", token(keys, "RS256", "globex", kid=None), ("ok", "globex")),
        ("PS256 with an unknown kid", token(keys, "PS256", "initech", kid="whatever"), ("ok", "initech")),
        ("ES256", token(keys, "ES256", "acme"), ("ok", "acme")),
        ("EdDSA without kid", token(keys, "EdDSA", "globex", kid=None), ("ok", "globex")),
        ("HS256 with the secret", token(keys, "HS256", "acme"), ("ok", "acme")),
        ("RS256 by a key not in the file", token(keys, "RS256", key=keys.rsa_other, kid=None), "bad signature"),
        ("RS256 by a key not in the file, with kid", token(keys, "RS256", key=keys.rsa_other), "bad signature"),
    ]
    bad = check_cases(b, [(n, t, w, {}) for n, t, w in cases])
    # ES384: the file has no P-384 key at all
    got = attempt(b, token(keys, "ES384"))
    if not (reason_is(got, "unknown key") or reason_is(got, "bad signature")):
        bad.append(("ES384 without a P-384 key", got))
    # algorithm confusion: the RSA (and EC) public key PEM as an HMAC secret
    for name, secret in (("rsa pem", keys.rsa.public_pem), ("rsa pem without newline", keys.rsa.public_pem.strip()),
                         ("ec pem", keys.ec256.public_pem)):
        for kid in (None, "rsa-1"):
            got = attempt(b, hmac_token(secret, claims(iss=ISS_A, aud=AUD), kid=kid))
            if not (reason_is(got, "algorithm not allowed") or reason_is(got, "bad signature")):
                bad.append(("HS256 keyed with the %s, kid %s" % (name, kid), got))
    assert not bad, bad


def test_nested_and_namespaced_tenant_claims(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"jwt_tenant_claim": "app_metadata.tenant"})
    nested = token(keys, tenant=None, app_metadata={"tenant": "globex", "plan": "pro"})
    with tls(b, nested) as conn:
        assert_in_tenant(conn, "globex")
    # a top-level claim of that very name wins over the path
    both = token(keys, tenant=None, app_metadata={"tenant": "globex"}, **{"app_metadata.tenant": "initech"})
    assert attempt(b, both) == ok_in("initech")
    # the default claim is not looked at any more
    assert reason_is(attempt(b, token(keys, tenant="acme")), "missing tenant claim")
    assert reason_is(attempt(b, token(keys, tenant=None, app_metadata={"plan": "pro"})), "missing tenant claim")
    # an Auth0-style namespaced claim: ':' '/' and '.' in one top-level name
    b.reload(jwt_tenant_claim="https://example.com/tenant")
    tok = token(keys, tenant=None, **{"https://example.com/tenant": "acme"})
    with tls(b, tok) as conn:
        assert_in_tenant(conn, "acme")
    # and the default, Cognito's custom:tenant_id
    del b.settings["jwt_tenant_claim"]
    b.reload()
    assert attempt(b, token(keys, tenant="initech")) == ok_in("initech")


def test_issuers_bound_to_their_tenants(bouncer_factory, keys, certs, schemas):
    """acme takes tokens only from issuer A, globex only from issuer B;
    initech (unbound) from either of the global list; a token of A naming
    globex is refused, whoever minted it."""
    b = jwt_bouncer(bouncer_factory, keys, certs,
                    settings={"jwt_issuer": "%s, %s" % (ISS_A, ISS_B)},
                    tenants={"acme": "pool_size=2 jwt_issuer=%s" % ISS_A,
                             "globex": "pool_size=2 jwt_issuer=%s" % ISS_B})
    with tls(b, token(keys, tenant="acme", iss=ISS_A)) as conn:
        assert_in_tenant(conn, "acme")
    with tls(b, token(keys, "ES256", tenant="globex", iss=ISS_B)) as conn:
        assert_in_tenant(conn, "globex")
    cases = [
        ("A for globex", token(keys, tenant="globex", iss=ISS_A), "issuer not allowed for tenant globex"),
        ("B for acme", token(keys, "ES256", tenant="acme", iss=ISS_B), "issuer not allowed for tenant acme"),
        ("A for initech", token(keys, tenant="initech", iss=ISS_A), ("ok", "initech")),
        ("B for initech", token(keys, tenant="initech", iss=ISS_B), ("ok", "initech")),
        ("C for acme", token(keys, tenant="acme", iss="https://issuer-c.example.com"), "wrong issuer"),
    ]
    bad = check_cases(b, [(n, t, w, {}) for n, t, w in cases])
    # the tenant named another way (a startup parameter agreeing with the claim) is bound too
    got = attempt(b, token(keys, tenant="globex", iss=ISS_A), server_settings={"tenant": "globex"})
    if not reason_is(got, "issuer not allowed for tenant globex"):
        bad.append(("A for globex, also named by parameter", got))
    # ... and a token without the tenant claim cannot borrow one from another source
    got = attempt(b, token(keys, tenant=None, iss=ISS_A), server_settings={"tenant": "globex"})
    if not reason_is(got, "missing tenant claim"):
        bad.append(("A without a tenant claim, globex by parameter", got))
    got = attempt(b, token(keys, tenant=None, iss=ISS_A), user="app.acme")
    if not reason_is(got, "missing tenant claim"):
        bad.append(("A without a tenant claim, acme by user suffix", got))
    # with jwt_tenant_claim empty the token only authenticates, and the tenant
    # comes from elsewhere; the issuer binding still holds
    b.reload(jwt_tenant_claim="")
    got = attempt(b, token(keys, tenant=None, iss=ISS_A), server_settings={"tenant": "globex"})
    if not reason_is(got, "issuer not allowed for tenant globex"):
        bad.append(("no tenant claim configured, A, globex by parameter", got))
    got = attempt(b, token(keys, tenant=None, iss=ISS_A), user="app.acme")
    if got != ok_in("acme"):
        bad.append(("no tenant claim configured, A, acme by user suffix", got))
    assert not bad, bad


# ---------------------------------------------------------------- refusals

def test_claim_refusals(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"jwt_audience": "%s, %s" % (AUD, AUD2)})
    now = int(time.time())
    with tls(b, token(keys)) as good:  # a client that stays logged in throughout
        cases = [
            ("expired", token(keys, exp=now - 120), "expired"),
            ("expired within the leeway", token(keys, exp=now - 5), ("ok", "acme")),
            ("not yet valid", token(keys, nbf=now + 120), "not yet valid"),
            ("nbf within the leeway", token(keys, nbf=now + 5), ("ok", "acme")),
            ("nbf past", token(keys, nbf=now - 60), ("ok", "acme")),
            ("issued in the future", token(keys, iat=now + 120), "issued in the future"),
            ("iat within the leeway", token(keys, iat=now + 5), ("ok", "acme")),
            ("missing exp", token(keys, exp=UNSET), "missing exp"),
            ("wrong issuer", token(keys, iss="https://evil.example.com"), "wrong issuer"),
            ("issuer prefix", token(keys, iss=ISS_A + "x"), "wrong issuer"),
            ("no issuer", token(keys, iss=UNSET), "wrong issuer"),
            ("aud string, second audience", token(keys, aud=AUD2), ("ok", "acme")),
            ("aud array", token(keys, aud=["other", AUD]), ("ok", "acme")),
            ("wrong aud string", token(keys, aud="other"), "wrong audience"),
            ("wrong aud array", token(keys, aud=["other", "another"]), "wrong audience"),
            ("empty aud array", token(keys, aud=[]), "wrong audience"),
            ("no aud", token(keys, aud=UNSET), "wrong audience"),
            ("Cognito client_id", token(keys, aud=UNSET, client_id=AUD, token_use="access"), ("ok", "acme")),
            ("wrong client_id", token(keys, aud=UNSET, client_id="other"), "wrong audience"),
            ("missing tenant claim", token(keys, tenant=None), "missing tenant claim"),
            ("tenant not matching tenant_id_pattern", token(keys, tenant="Bad-Id"), ("08004", "invalid tenant id")),
            ("tenant with a quote", token(keys, tenant="acme'"), ("08004", "invalid tenant id")),
        ]
        bad = check_cases(b, [(n, t, w, {}) for n, t, w in cases])
        # other sources: agreeing is fine, disagreeing is a conflict, and a
        # token without the claim cannot take the tenant another source names
        more = [
            ("user suffix agrees", token(keys, tenant="acme"), ("ok", "acme"), {"user": "app.acme"}),
            ("user suffix conflicts", token(keys, tenant="acme"), ("08004", "conflicting tenant"),
             {"user": "app.globex"}),
            ("parameter conflicts", token(keys, tenant="acme"), ("08004", "conflicting tenant"),
             {"server_settings": {"tenant": "globex"}}),
            ("no claim, tenant by parameter", token(keys, tenant=None), "missing tenant claim",
             {"server_settings": {"tenant": "globex"}}),
            ("no claim, tenant by user suffix", token(keys, tenant=None), "missing tenant claim",
             {"user": "app.initech"}),
        ]
        bad += check_cases(b, more)
        assert not bad, bad
        assert_in_tenant(good, "acme")
    assert b.proc.poll() is None
    assert_not_logged(b, [c[1] for c in cases] + [c[1] for c in more])
    for reason in ("expired", "not yet valid", "issued in the future", "missing exp", "wrong issuer",
                   "wrong audience", "missing tenant claim"):
        assert reason in b.log(), "the refusal reason %r is not logged" % reason


def test_signature_and_key_refusals(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs)
    good = token(keys)
    payload = claims(iss=ISS_A, aud=AUD)
    h_none = {"alg": "none", "typ": "JWT"}
    cases = [
        ("flipped signature bit", flip_signature(good), "bad signature"),
        ("payload changed to another tenant", tamper_payload(good, **{"custom:tenant_id": "globex"}),
         "bad signature"),
        ("ES256 payload changed", tamper_payload(token(keys, "ES256"), exp=int(time.time()) + 99999),
         "bad signature"),
        ("EdDSA signature flipped", flip_signature(token(keys, "EdDSA")), "bad signature"),
        ("signed by another RSA key under kid rsa-1", token(keys, key=keys.rsa_other, kid="rsa-1"),
         "bad signature"),
        ("empty signature", good.rsplit(".", 1)[0] + ".", ["bad signature", "malformed"]),
        ("HS256 with another secret", token(keys, "HS256", key=b"not-the-secret"), "bad signature"),
        ("HS256 keyed with the secret file's newline", token(keys, "HS256", key=keys.secret + b"\n"),
         "bad signature"),
        ("unknown kid", token(keys, kid="no-such-kid"), "unknown key"),
        ("unknown kid, ES256", token(keys, "ES256", kid="no-such-kid"), "unknown key"),
        ("alg none", hand_made(h_none, payload), "algorithm none"),
        ("alg none with a signature", hand_made(h_none, payload, b"\x01" * 32), "algorithm none"),
        ("alg none with a kid", hand_made(dict(h_none, kid="rsa-1"), payload), "algorithm none"),
    ]
    bad = check_cases(b, [(n, t, w, {}) for n, t, w in cases])
    # algorithm confusion with the JWKS: HS256 is allowed and a secret file is
    # configured, but the RSA public key is never an HMAC secret
    confusion = []
    for secret in (keys.rsa.public_pem, keys.rsa.public_pem.strip()):
        for kid in (None, "rsa-1", "rsa-rs256"):
            confusion.append(hmac_token(secret, payload, kid=kid))
    for tok in confusion:
        got = attempt(b, tok)
        if not (reason_is(got, "algorithm not allowed") or reason_is(got, "bad signature")):
            bad.append(("HS256 keyed with the RSA public key PEM", jwt_header(tok), got))
    assert not bad, bad
    assert attempt(b, good) == ok_in("acme")
    assert_not_logged(b, [c[1] for c in cases] + confusion)


def jwt_header(tok):
    h = tok.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))


def test_algorithm_allow_list(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"jwt_algorithms": "RS256"})
    assert attempt(b, token(keys, "RS256")) == ok_in("acme")
    cases = [(alg, token(keys, alg), "algorithm not allowed")
             for alg in ("ES384", "ES256", "RS512", "PS256", "EdDSA", "HS256")]
    bad = check_cases(b, [(n, t, w, {}) for n, t, w in cases])
    assert not bad, bad
    # the default list is RS256, ES256
    del b.settings["jwt_algorithms"]
    b.reload()
    cases = [("default RS256", token(keys, "RS256"), ("ok", "acme")),
             ("default ES256", token(keys, "ES256"), ("ok", "acme")),
             ("default ES384", token(keys, "ES384"), "algorithm not allowed"),
             ("default EdDSA", token(keys, "EdDSA"), "algorithm not allowed"),
             ("default HS256", token(keys, "HS256"), "algorithm not allowed")]
    bad = check_cases(b, [(n, t, w, {}) for n, t, w in cases])
    assert not bad, bad


def test_malformed_and_oversized_tokens_leave_others_unaffected(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs)
    good = token(keys)
    h, p, s = good.split(".")
    bad_payload = h + "." + p[:10] + "*" + p[11:]
    stop = threading.Event()
    seen = {"n": 0, "errors": []}

    def busy():
        try:
            with tls(b, token(keys, tenant="globex")) as conn:
                while not stop.is_set():
                    assert where(conn) == ({"globex"}, SEARCH_PATH % "globex", "globex", "app")
                    seen["n"] += 1
        except Exception as e:  # noqa: BLE001
            seen["errors"].append(repr(e))

    t = threading.Thread(target=busy)
    t.start()
    try:
        cases = [
            ("a password", APP_PASSWORD, "malformed"),
            ("two parts", h + "." + p, "malformed"),
            ("four parts", good + ".xyz", "malformed"),
            ("bad base64url in the header", "eyJ@@@" + h[6:] + "." + p + "." + s, "malformed"),
            ("bad base64url in the payload, signed", bad_payload + "." + sign_input(keys.rsa, bad_payload),
             "malformed"),
            ("standard base64 characters in the signature", h + "." + p + "." + s[:-4] + "+/+/", "malformed"),
            ("header not JSON", b64url("{not json") + "." + p + "." + s, "malformed"),
            ("payload not JSON, signed", sign_bytes(keys, b'{"exp": 1,'), "malformed"),
            ("payload not UTF-8 JSON, signed", sign_bytes(keys, b'\xff\xfe{}'), "malformed"),
            ("header an array", b64url_json([{"alg": "RS256", "kid": "rsa-1"}]) + "." + p + "." + s, "malformed"),
            ("payload an array, signed", sign_bytes(keys, b'[{"exp": 99999999999}]'), "malformed"),
            ("payload a string, signed", sign_bytes(keys, b'"acme"'), "malformed"),
            ("header a string", b64url_json("RS256") + "." + p + "." + s, "malformed"),
            ("dots only", "..", "malformed"),
            # larger than the I/O buffer, so the message has a buffer of its own
            # that goes when the refused client does (use after free, under ASan)
            ("12,000 bytes of garbage", "x" * 12000, "malformed"),
            ("12,000-byte token for a tenant the user suffix contradicts",
             sized_token(keys, 12000, claims(iss=ISS_A, aud=AUD)), ("08004", "conflicting tenant")),
            ("one byte over the limit", sized_token(keys, 16385, claims(iss=ISS_A, aud=AUD)), "too large"),
        ]
        bad = check_cases(b, [(n, tk, w, {"user": "app.globex"} if "contradicts" in n else {})
                              for n, tk, w in cases])
        # a token of exactly the limit (and one larger than a packet buffer) is verified
        for size in (12000, 16384):
            got = attempt(b, sized_token(keys, size, claims(iss=ISS_A, aud=AUD)))
            if got != ok_in("acme"):
                bad.append(("valid token of %d bytes" % size, got))
        # 1 MB, by hand: refused without pgtenant reading (or keeping) all of it
        huge = good + "A" * (1 << 20)
        asked, err = raw_jwt_login(b, huge)
        if not (asked == [3] and err and err.get("C") == "28P01" and reason_is(("28P01", err.get("M")), "too large")):
            bad.append(("1 MB token", asked, err))
        got = attempt(b, huge)
        if not reason_is(got, "too large"):
            bad.append(("1 MB token through asyncpg", got))
        assert not bad, bad
    finally:
        stop.set()
        t.join()
    assert not seen["errors"] and seen["n"] > 0, seen
    assert b.proc.poll() is None
    assert attempt(b, good) == ok_in("acme")
    assert_not_logged(b, [good])


def test_refusal_is_delayed_like_a_bad_password(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"auth_failure_delay": "0.3"})
    t0 = time.monotonic()
    got = attempt(b, token(keys, exp=int(time.time()) - 600))
    elapsed = time.monotonic() - t0
    assert reason_is(got, "expired"), got
    assert 0.3 <= elapsed < 2.5


# ---------------------------------------------------------------- users

def test_user_claim(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs)  # jwt_user_claim: default sub
    cases = [
        ("sub equals the user", token(keys, sub="app"), ("ok", "acme"), {}),
        ("sub equals the user without its tenant suffix", token(keys, sub="app"), ("ok", "acme"),
         {"user": "app.acme"}),
        ("sub differs", token(keys, sub="bob"), "user does not match the token's sub", {}),
        ("sub carries the suffix", token(keys, sub="app.acme"), "user does not match the token's sub",
         {"user": "app.acme"}),
        ("sub missing", token(keys, sub=UNSET), "user does not match the token's sub", {}),
    ]
    bad = check_cases(b, cases)
    assert not bad, bad
    b.reload(jwt_user_claim="cognito:username")
    cases = [
        ("cognito:username equals", token(keys, sub="x-uuid", **{"cognito:username": "app"}), ("ok", "acme"), {}),
        ("cognito:username differs", token(keys, sub="app", **{"cognito:username": "bob"}),
         "user does not match the token's cognito:username", {}),
    ]
    bad = check_cases(b, cases)
    assert not bad, bad
    b.reload(jwt_user_claim="")  # off: the startup user as is
    assert attempt(b, token(keys, sub="bob")) == ok_in("acme")


def test_user_map_names_the_server_user(bouncer_factory, keys, certs, schemas, pg, ro_role):
    """No user= in the [databases] entry: the server user comes from
    jwt_user_map applied to the user claim (which the startup user equals)."""
    entry = "host=127.0.0.1 port=%d dbname=appdb password=%s" % (pg.port, APP_PASSWORD)
    b = jwt_bouncer(bouncer_factory, keys, certs, databases={"appdb": entry},
                    settings={"jwt_user_map": "analyst=%s, *=app" % ro_role})
    with tls(b, token(keys, sub="analyst"), user="analyst") as conn:
        sp, tid, user = conn.execute("select current_setting('search_path'), current_setting('app.tenant_id'), "
                                     "current_user").fetchone()
        assert (sp, tid, user) == (SEARCH_PATH % "acme", "acme", ro_role)
    with tls(b, token(keys, "ES256", tenant="globex", sub="zed"), user="zed") as conn:
        assert_in_tenant(conn, "globex", user="app")
    assert reason_is(attempt(b, token(keys, sub="analyst"), user="zed"), "user does not match the token's sub")
    # SHOW POOLS names a pool's user as server user.tenant
    pools = {(p["user"], p["tenant"]) for p in b.admin("SHOW POOLS") if p["database"] == "appdb"}
    assert {(ro_role + ".acme", "acme"), ("app.globex", "globex")} <= pools
    assert not {u for u, _ in pools} & {"analyst.acme", "zed.globex"}
    # "analyst=app, *=app": everyone logs in to the server as app
    b.reload(jwt_user_map="analyst=app, *=app")
    assert attempt(b, token(keys, sub="analyst"), user="analyst") == ok_in("acme", "app")


# ---------------------------------------------------------------- transports

def test_plaintext_tcp_is_refused_before_the_password(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs)
    tok = token(keys)
    asked, err = raw_jwt_login(b, tok, tls=False)
    assert asked == [] and err and err["C"] == "28000" and "requires TLS" in err["M"], (asked, err)
    assert err.get("S") == "FATAL" or err.get("V") == "FATAL", err
    code, msg = attempt(b, tok, tls=False)
    assert code == "28000" and "requires TLS" in msg, (code, msg)
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        b.connect(password=tok, sslmode="disable")
    # the same client over TLS is fine
    asked, err = raw_jwt_login(b, tok)
    assert asked == [3, 0] and err is None, (asked, err)
    with tls(b, tok) as conn:
        assert_in_tenant(conn, "acme")
    assert_not_logged(b, [tok])
    # jwt_allow_plaintext = yes
    b.reload(jwt_allow_plaintext="yes")
    assert attempt(b, tok, tls=False) == ok_in("acme")
    with b.connect(password=token(keys, "ES256", "globex"), sslmode="disable") as conn:
        assert not conn.info.pgconn.ssl_in_use
        assert_in_tenant(conn, "globex")
    # and back
    b.reload(jwt_allow_plaintext="no")
    assert attempt(b, tok, tls=False)[0] == "28000"


def test_unix_socket_client_is_allowed(bouncer_factory, keys, certs, schemas):
    sockdir = tempfile.mkdtemp(prefix="pgtj-")
    try:
        b = jwt_bouncer(bouncer_factory, keys, certs, settings={"unix_socket_dir": sockdir})
        tok = token(keys, "EdDSA", "initech")
        with psycopg.connect(host=sockdir, port=b.port, user="app", dbname="appdb", password=tok,
                             autocommit=True, prepare_threshold=None) as conn:
            assert_in_tenant(conn, "initech")
        assert attempt(b, tok, host=sockdir, tls=False) == ok_in("initech")
        assert reason_is(attempt(b, token(keys, exp=int(time.time()) - 600), host=sockdir, tls=False), "expired")
        # TCP without TLS is still refused
        assert attempt(b, tok, tls=False)[0] == "28000"
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


# ---------------------------------------------------------------- keys on RELOAD

def test_key_rotation_through_the_file(bouncer_factory, keys, certs, schemas):
    path = keys.write_jwks("rotate.json", [keys.rsa.jwk("rsa-1"), keys.ec256.jwk("ec256-1")])
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"jwt_key_file": path})
    old = token(keys)
    new = token(keys, "RS256", "globex", key=keys.rsa2, kid="rsa-2")
    assert attempt(b, old) == ok_in("acme")
    assert reason_is(attempt(b, new), "unknown key")
    kept = tls(b, old)
    # the issuer rotates: rsa-2 published, rsa-1 withdrawn
    keys.write_jwks("rotate.json", [keys.rsa2.jwk("rsa-2"), keys.ec256.jwk("ec256-1")])
    b.reload()
    assert attempt(b, new) == ok_in("globex")
    assert attempt(b, token(keys, "RS256", "initech", key=keys.rsa2, kid=None)) == ok_in("initech")
    assert reason_is(attempt(b, token(keys)), "unknown key")
    assert reason_is(attempt(b, token(keys, kid=None)), "bad signature")
    assert attempt(b, token(keys, "ES256")) == ok_in("acme")  # the key that stayed
    # a session opened with the old key is not cut off by the rotation
    assert_in_tenant(kept, "acme")
    kept.close()
    # the HMAC secret is re-read as well
    with open(keys.path("hmac2.secret"), "wb") as f:
        f.write(b"a-new-secret-for-rotation-0123456789\n")
    b.reload(jwt_secret_file=keys.path("hmac2.secret"))
    assert attempt(b, token(keys, "HS256", key=b"a-new-secret-for-rotation-0123456789")) == ok_in("acme")
    assert reason_is(attempt(b, token(keys, "HS256")), "bad signature")


# ---------------------------------------------------------------- auth_type per database, admin console

def test_auth_type_jwt_per_database(bouncer_factory, keys, certs, schemas, pg):
    entry = "host=127.0.0.1 port=%d dbname=appdb user=app password=%s auth_type=jwt" % (pg.port, APP_PASSWORD)
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"auth_type": "scram-sha-256"},
                    databases={"jwtdb": entry})
    tok = token(keys, "ES256", "globex")
    with tls(b, tok, dbname="jwtdb") as conn:
        assert_in_tenant(conn, "globex")
    # the other entry still takes passwords (SCRAM), over plaintext TCP too
    with b.connect(password=APP_PASSWORD, sslmode="disable", options="-c tenant=acme") as conn:
        assert_in_tenant(conn, "acme")
    assert attempt(b, APP_PASSWORD, tls=False, server_settings={"tenant": "initech"}) == ok_in("initech")
    # ... and not tokens; and the JWT entry not passwords
    assert attempt(b, tok, server_settings={"tenant": "globex"})[0] == "28P01"
    assert reason_is(attempt(b, APP_PASSWORD, dbname="jwtdb", server_settings={"tenant": "acme"}), "malformed")
    # the JWT entry asks TLS of TCP clients before any password
    asked, err = raw_jwt_login(b, tok, tls=False, dbname="jwtdb")
    assert asked == [] and err and err["C"] == "28000" and "requires TLS" in err["M"], (asked, err)
    asked, err = raw_jwt_login(b, tok, tls=True, dbname="jwtdb")
    assert asked == [3, 0] and err is None, (asked, err)


def test_admin_console_uses_its_password_when_auth_type_is_jwt(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs)
    rows = b.admin("SHOW POOLS")  # libpq's sslmode prefer: over TLS
    assert isinstance(rows, list)
    with psycopg.connect(b.dsn("admin", "pgtenant", sslmode="disable"), autocommit=True) as conn:
        assert not conn.info.pgconn.ssl_in_use
        conn.execute("SHOW POOLS", prepare=False)
    with psycopg.connect(b.dsn("monitor", "pgtenant", sslmode="require"), autocommit=True) as conn:
        conn.execute("SHOW STATS", prepare=False)
    # a token is not the admin's password, and a wrong password is refused
    assert attempt(b, token(keys, sub="admin"), user="admin", dbname="pgtenant")[0] == "28P01"
    assert attempt(b, "wrong", user="admin", dbname="pgtenant")[0] == "28P01"
    # meanwhile tokens work for the databases
    assert attempt(b, token(keys)) == ok_in("acme")


# ---------------------------------------------------------------- metrics, log

def metric(samples, name, **labels):
    """The value of the series of name with these labels; 0 when absent."""
    for (n, ls), v in samples.items():
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items()):
            return v
    return 0.0


def test_metrics_count_refusals_by_reason(bouncer_factory, keys, certs, schemas):
    port = free_port()
    b = jwt_bouncer(bouncer_factory, keys, certs, settings={"metrics_listen": "127.0.0.1:%d" % port})
    b.metrics_port = port
    assert attempt(b, token(keys)) == ok_in("acme")
    before = parse(scrape(b))
    now = int(time.time())
    made = [
        (token(keys, exp=now - 300), "expired"),
        (token(keys, "ES256", exp=now - 900), "expired"),
        (flip_signature(token(keys)), "bad signature"),
        (token(keys, kid="nope"), "unknown key"),
        (hand_made({"alg": "none"}, claims(iss=ISS_A, aud=AUD)), "algorithm none"),
        ("x.y", "malformed"),
    ]
    for tok, reason in made:
        assert reason_is(attempt(b, tok), reason), reason
    assert attempt(b, token(keys, "EdDSA", "globex")) == ok_in("globex")  # a success counts nothing
    after = parse(scrape(b))

    def grew(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert any(n == "pgtenant_jwt_refusals_total" for n, _ in after), "no pgtenant_jwt_refusals_total series"
    assert grew("pgtenant_refusals_total", reason="jwt_invalid") == 6
    assert grew("pgtenant_jwt_refusals_total", jwt_reason="expired") == 2
    assert grew("pgtenant_jwt_refusals_total", jwt_reason="bad_signature") == 1
    assert grew("pgtenant_jwt_refusals_total", jwt_reason="unknown_key") == 1
    assert grew("pgtenant_jwt_refusals_total", jwt_reason="algorithm_none") == 1
    assert grew("pgtenant_jwt_refusals_total", jwt_reason="malformed") == 1
    assert grew("pgtenant_jwt_refusals_total", jwt_reason="wrong_issuer") == 0
    assert grew("pgtenant_refusals_total", reason="auth_failed") == 0
    assert_not_logged(b, [t for t, _ in made])


def test_the_log_never_contains_a_token(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs)
    used = []
    for alg, tenant in (("RS256", "acme"), ("ES256", "globex"), ("HS256", "initech")):
        tok = token(keys, alg, tenant)
        used.append(tok)
        with tls(b, tok) as conn:
            conn.execute("select 1")
    refused = [token(keys, exp=int(time.time()) - 600), token(keys, tenant="Bad-Id"), flip_signature(token(keys)),
               token(keys, sub="bob"), token(keys, iss="https://evil.example.com")]
    for tok in refused:
        assert attempt(b, tok)[0] in ("28P01", "08004")
    b.admin("SHOW CLIENTS")
    assert b.log_contains("expired") >= 1
    assert_not_logged(b, used + refused)


# ---------------------------------------------------------------- isolation

def test_tenants_logging_in_with_tokens_concurrently_see_only_their_rows(bouncer_factory, keys, certs, schemas):
    b = jwt_bouncer(bouncer_factory, keys, certs, tenants={"acme": "pool_size=2", "globex": "pool_size=2"})
    errors = []
    algs = {"acme": ["RS256", "ES256", "EdDSA"], "globex": ["PS256", "ES384", "HS256"]}

    def worker(tenant, n):
        try:
            for round_ in range(2):  # log in twice: logins interleave with queries of the other tenant
                tok = token(keys, algs[tenant][(n + round_) % 3], tenant)
                with tls(b, tok) as conn:
                    for i in range(25):
                        got = where(conn)
                        if got != ({tenant}, SEARCH_PATH % tenant, tenant, "app"):
                            errors.append((tenant, n, i, got))
                        if i % 5 == 0:
                            with conn.transaction():
                                conn.execute("set local search_path = tenant_%s"
                                             % ("globex" if tenant == "acme" else "acme"))
        except Exception as e:  # noqa: BLE001
            errors.append((tenant, n, repr(e)))

    threads = [threading.Thread(target=worker, args=(t, n)) for t in ("acme", "globex") for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:10]
    pools = [p for p in b.admin("SHOW POOLS") if p["database"] == "appdb"]
    assert {p["tenant"] for p in pools} >= {"acme", "globex"}
