#!/usr/bin/python3
"""Write the seed corpora of the fuzz targets (test/fuzz/corpus/<target>/).

Seeds are real traffic, rebuilt here byte for byte: startup packets as
libpq (psql, psycopg), asyncpg and pgjdbc send them, the message sequences
they send after login, server answers, the RFC 7677 SCRAM exchange (and
others computed with hashlib), ini files, userlists, JWTs (python3-jwt),
JWKS documents and secret files.  Run from anywhere:

    /usr/bin/python3 test/fuzz/make_corpus.py

Files are named after what they hold, so a rerun rewrites the same files
(HS256 JWT signatures are deterministic too).  Inputs kept from fuzzing
runs (found-<sha1>, the libFuzzer -merge=1 of a run) and crash inputs
(crash-*) are left alone.
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, "fuzz_" + target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup(params, version=196608):
    body = struct.pack("!I", version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def msg(t, body=b""):
    return t.encode() + struct.pack("!I", len(body) + 4) + body


# ---------------------------------------------------------------- startup
def corpus_startup():
    w = lambda n, d: write("startup", n, d)
    w("libpq-psql", startup([("user", "app"), ("database", "appdb"), ("application_name", "psql"),
                             ("client_encoding", "UTF8")]))
    w("libpq-options-tenant", startup([("user", "app"), ("database", "appdb"),
                                       ("options", "-c tenant=acme -c search_path=tenant_acme,public"),
                                       ("application_name", "psql")]))
    w("libpq-options-escapes", startup([("user", "app"), ("database", "appdb"),
                                        ("options", r"--search_path=a\ b -cstatement_timeout=5s -c work_mem=7MB")]))
    w("libpq-replication", startup([("user", "repl"), ("database", "replication"), ("replication", "database"),
                                    ("application_name", "walreceiver")]))
    w("psycopg-tenant-param", startup([("user", "app"), ("database", "appdb"), ("tenant", "acme"),
                                       ("client_encoding", "utf-8"), ("application_name", "myapp")]))
    w("user-suffix", startup([("user", "app.acme"), ("database", "appdb")]))
    w("conflict", startup([("user", "app.globex"), ("database", "appdb"), ("tenant", "acme"),
                           ("options", "-c tenant=initech")]))
    w("asyncpg", startup([("user", "postgres"), ("database", "postgres"), ("client_encoding", "'utf-8'")]))
    w("pgjdbc", startup([("user", "app"), ("database", "appdb"), ("client_encoding", "UTF8"),
                         ("DateStyle", "ISO"), ("TimeZone", "Europe/Paris"), ("extra_float_digits", "2"),
                         ("application_name", "PostgreSQL JDBC Driver")]))
    w("protocol-3.2", startup([("user", "app"), ("database", "appdb"), ("_pq_.some_ext", "on")],
                              version=(3 << 16) | 2))
    w("cancel", struct.pack("!IIII", 16, 80877102, 12345, 0xdeadbeef))
    w("sslrequest", struct.pack("!II", 8, 80877103))
    w("gssencrequest", struct.pack("!II", 8, 80877104))
    w("v2", startup([("user", "app")], version=2 << 16))
    w("options-only", "-c tenant=acme --work-mem=4MB -c x.y=a\\ b\\\\c")
    w("options-conflict", "-c tenant=acme -c Tenant=globex")


# ---------------------------------------------------------------- client messages
def parse(name, q, oids=()):
    return msg("P", cstr(name) + cstr(q) + struct.pack("!H", len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


def bind(portal, stmt, params, fmts=(), rfmts=()):
    b = cstr(portal) + cstr(stmt) + struct.pack("!H", len(fmts)) + b"".join(struct.pack("!H", f) for f in fmts)
    b += struct.pack("!H", len(params))
    for p in params:
        b += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    b += struct.pack("!H", len(rfmts)) + b"".join(struct.pack("!H", f) for f in rfmts)
    return msg("B", b)


def describe(kind, name):
    return msg("D", kind.encode() + cstr(name))


def close(kind, name):
    return msg("C", kind.encode() + cstr(name))


def execute(portal, rows=0):
    return msg("E", cstr(portal) + struct.pack("!I", rows))


SYNC = msg("S")
FLUSH = msg("H")
TERM = msg("X")


def query(q):
    return msg("Q", cstr(q))


def corpus_client():
    w = lambda n, d: write("client_msgs", n, d)
    w("simple-select", query("SELECT 1"))
    w("simple-multi", query("BEGIN; SELECT * FROM t WHERE id = 1; COMMIT"))
    w("psycopg-unnamed", parse("", "SELECT $1::int", (23,)) + bind("", "", [b"42"]) + describe("P", "") +
      execute("") + SYNC)
    w("asyncpg-named", parse("__asyncpg_stmt_1__", "SELECT * FROM accounts WHERE id = $1", (20,)) +
      describe("S", "__asyncpg_stmt_1__") + SYNC + bind("", "__asyncpg_stmt_1__", [struct.pack("!q", 7)], (1,), (1,)) +
      execute("") + SYNC)
    w("pgjdbc-batch", b"".join(parse("S_%d" % i, "INSERT INTO t VALUES ($1, $2)", (23, 25)) +
                               bind("", "S_%d" % i, [b"1", None]) + execute("") for i in range(1, 4)) + SYNC)
    w("close-deallocate", close("S", "S_1") + close("P", "") + SYNC + query("DEALLOCATE ALL") +
      query("DEALLOCATE \"S_2\"") + query("DISCARD ALL"))
    w("copy-in", query("COPY t FROM STDIN") + msg("d", b"1\tone\n2\ttwo\n") + msg("c"))
    w("copy-fail", query("COPY t FROM STDIN (FORMAT csv)") + msg("d", b"1,x\n") + msg("f", cstr("client gave up")))
    w("session-state", query("SET SESSION app.tenant = 'acme'") + query("SELECT set_config('app.user', 'x', false)") +
      query("SELECT pg_advisory_lock(1)") + query("CREATE TEMP TABLE tmp (x int)") + query("LISTEN chan") +
      query("SET search_path TO tenant_acme, public"))
    w("long-query", query("SELECT " + ", ".join("col%d" % i for i in range(200)) +
                          " FROM very_long_table_name WHERE x IN (SELECT set_config('a.b', 'c', true))"))
    w("function-call", msg("F", struct.pack("!IH", 1598, 1) + struct.pack("!H", 0) + struct.pack("!H", 1) +
                           struct.pack("!i", 4) + b"\0\0\0\1" + struct.pack("!H", 0)) + FLUSH + TERM)
    w("cut-short", parse("s", "SELECT 1")[:9])


# ---------------------------------------------------------------- server messages
def error(fields, t="E"):
    return msg(t, b"".join(k.encode() + cstr(v) for k, v in fields) + b"\0")


def param_status(k, v):
    return msg("S", cstr(k) + cstr(v))


def rowdesc(cols):
    b = struct.pack("!H", len(cols))
    for name, oid in cols:
        b += cstr(name) + struct.pack("!IhIhih", 0, 0, oid, -1, -1, 0)
    return msg("T", b)


def datarow(vals):
    b = struct.pack("!H", len(vals))
    for v in vals:
        b += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + (v.encode() if isinstance(v, str) else v)
    return msg("D", b)


def complete(tag):
    return msg("C", cstr(tag))


def ready(s="I"):
    return msg("Z", s.encode())


def corpus_server():
    w = lambda n, d: write("server_msgs", n, d)
    login = (msg("R", struct.pack("!I", 10) + cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + b"\0") +
             msg("R", struct.pack("!I", 11) + b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") +
             msg("R", struct.pack("!I", 12) + b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") +
             msg("R", struct.pack("!I", 0)))
    params = b"".join(param_status(k, v) for k, v in [
        ("application_name", "psql"), ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
        ("default_transaction_read_only", "off"), ("in_hot_standby", "off"), ("integer_datetimes", "on"),
        ("IntervalStyle", "postgres"), ("is_superuser", "off"), ("server_encoding", "UTF8"),
        ("server_version", "16.1 (Debian 16.1-1.pgdg120+1)"), ("session_authorization", "app"),
        ("standard_conforming_strings", "on"), ("TimeZone", "Etc/UTC")])
    w("login", login + params + msg("K", struct.pack("!II", 4242, 0x12345678)) + ready())
    w("md5-login", msg("R", struct.pack("!I", 5) + b"\x01\x02\x03\x04") + msg("R", struct.pack("!I", 0)) +
      param_status("server_version", "14beta2") + ready())
    w("error-all-fields", error([("S", "ERROR"), ("V", "ERROR"), ("C", "42P01"),
                                 ("M", 'relation "nope" does not exist'), ("D", "detail"), ("H", "hint"),
                                 ("P", "15"), ("p", "3"), ("q", "SELECT 1"), ("W", "PL/pgSQL function f()"),
                                 ("s", "public"), ("t", "nope"), ("c", "col"), ("d", "dom"), ("n", "con"),
                                 ("F", "parse_relation.c"), ("L", "1392"), ("R", "parserOpenTable")]) + ready())
    w("notice", error([("S", "NOTICE"), ("V", "NOTICE"), ("C", "00000"), ("M", "hello")], "N"))
    w("fatal-auth", error([("S", "FATAL"), ("V", "FATAL"), ("C", "28P01"),
                           ("M", 'password authentication failed for user "app"')]))
    w("select-rows", rowdesc([("id", 23), ("name", 25)]) + datarow(["1", "one"]) + datarow(["2", None]) +
      complete("SELECT 2") + ready("T"))
    w("authquery-row", rowdesc([("usename", 19), ("passwd", 25)]) +
      datarow(["app", "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="]) +
      complete("SELECT 1") + ready())
    w("authquery-md5", datarow(["md5" + hashlib.md5(b"secretapp").hexdigest()]) + complete("SELECT 1") + ready())
    w("role-row", datarow(["f", "off"]) + complete("SELECT 1") + ready())
    w("tags", b"".join(complete(t) for t in ["SET", "RESET", "DO", "DECLARE CURSOR", "DEALLOCATE ALL",
                                               "DISCARD ALL", "DROP TABLE", "CALL", "COPY 3", "COMMIT",
                                               "CREATE TABLE", "CLOSE CURSOR", "LISTEN", "UNLISTEN", "PREPARE",
                                               "INSERT 0 1", "UPDATE 5", "ROLLBACK"]) + ready())
    w("copy-out", msg("H", b"\0" + struct.pack("!H", 1) + struct.pack("!H", 0)) + msg("d", b"1\n") + msg("c") +
      complete("COPY 1") + ready())
    w("version-only", "150018 16.1 (Debian)")


# ---------------------------------------------------------------- SCRAM
def scram_keys(password, salt, it):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, it)
    ck = hmac.new(salted, b"Client Key", "sha256").digest()
    sk = hmac.new(salted, b"Server Key", "sha256").digest()
    return ck, hashlib.sha256(ck).digest(), sk


def b64(b):
    return base64.b64encode(b).decode()


def exchange(cnonce, snonce, salt, it, gs2="n,,", cbind=b"", user=""):
    ck, stored, sk = scram_keys("pencil", salt, it)
    cf_bare = "n=%s,r=%s" % (user, cnonce)
    sf = "r=%s%s,s=%s,i=%d" % (cnonce, snonce, b64(salt), it)
    without = "c=%s,r=%s%s" % (b64(gs2.encode() + cbind), cnonce, snonce)
    am = ",".join([cf_bare, sf, without]).encode()
    sig = hmac.new(stored, am, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(ck, sig))
    final = without + ",p=" + b64(proof)
    ssig = hmac.new(sk, am, "sha256").digest()
    secret = "SCRAM-SHA-256$%d:%s$%s:%s" % (it, b64(salt), b64(stored), b64(sk))
    return gs2 + cf_bare, sf, final, "v=" + b64(ssig), secret


def corpus_scram():
    w = lambda n, d: write("scram", n, d)
    cn, sn = "rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    cf, sf, fin, sfin, secret = exchange(cn, sn, salt, 4096, user="user")
    w("server-rfc7677", "\0" + cf + "\n" + fin)
    cf2, _, fin2, _, _ = exchange(cn, sn, salt, 4096)
    w("server-libpq", "\0" + cf2 + "\n" + fin2)
    cbind = bytes(range(1, 33))
    cf3, _, fin3, _, _ = exchange(cn, sn, salt, 4096, gs2="p=tls-server-end-point,,", cbind=cbind)
    w("server-plus", "\1" + cf3 + "\n" + fin3)
    cf4, _, fin4, _, _ = exchange(cn, sn, salt, 4096, gs2="y,,")
    w("server-y-offered", "\1" + cf4 + "\n" + fin4)
    w("server-bad-proof", "\0" + cf2 + "\n" + fin2[:-8] + "AAAAAAA=")
    w("client-rfc7677", "\2" + sf + "\n" + sfin)
    salt16 = b"0123456789abcdef"
    _, sf5, _, sfin5, secret5 = exchange(cn, sn, salt16, 16)
    w("client-cheap", "\2" + sf5 + "\n" + sfin5)
    w("client-error", "\2" + sf + "\ne=invalid-proof")
    w("client-extensions", "\2" + "r=%s%s,s=%s,i=4096,x=ext" % (cn, sn, b64(salt)) + "\n" + sfin)
    w("secret-rfc7677", "\3" + secret)
    w("secret-16", "\3" + secret5)
    w("saslprep", "\3" + "pass\u00a0word\u2163\u00ad")
    w("b64", "\3" + "dGVzdA==")


# ---------------------------------------------------------------- config, userlist
def corpus_config():
    w = lambda n, d: write("config", n, d)
    with open(os.path.join(ROOT, "etc", "pgtenant.ini"), "rb") as f:
        w("etc-pgtenant.ini", f.read())
    w("minimal", "[pgtenant]\nauth_type = trust\n")
    w("databases", "[databases]\nappdb = host=127.0.0.1 port=5433 dbname=real user=app password='p w'\n"
      "multi = host=a.example,b.example,10.0.0.3 port=5432,5433,5434 target_session_attrs=read-write "
      "load_balance_hosts=random\n* = host=/var/run/postgresql\n"
      "[pgtenant]\nlisten_port = 7432\npool_mode = transaction\nauth_type = scram-sha-256\n"
      "auth_file = userlist.txt\nquery_wait_timeout = 500ms\n")
    w("tenants", "[pgtenant]\nauth_type = trust\ntenant_sources = parameter, options, user\n"
      "tenant_id_pattern = [a-z0-9_]{1,48}\ntenant_search_path = \"$tenant\", public\n"
      "tenant_pool_mode = shared\ntenant_setting = app.tenant\n"
      "[tenants]\nacme = pool_size=10 max_client_conn=50 xact_rate=100\nglobex = pool_mode=dedicated\n"
      "[users]\napp = pool_mode=session max_user_connections=5\n")
    w("jwt", "[pgtenant]\nauth_type = jwt\njwt_algorithms = RS256, ES256, HS256\n"
      "jwt_tenant_claim = custom:tenant_id\njwt_issuer = https://a, https://b\njwt_audience = app1\n"
      "jwt_leeway = 30\njwt_user_map = analyst=app_ro, *=app\n")
    w("errors", "[pgtenant]\nlisten_port = 99999\nnope = 1\npool_mode = sideways\n[databases]\n"
      "x = host= port=abc\nx = dbname=y\n[weird\n")
    w("connstr-quotes", "host='a b' dbname='it''s' user=x password='\\'q\\'' port=6432")
    w("connstr-multi", "host=h1,h2 port=1,2 target_session_attrs=prefer-standby password_file=/run/secrets/db")


def corpus_userlist():
    w = lambda n, d: write("userlist", n, d)
    with open(os.path.join(ROOT, "etc", "userlist.txt"), "rb") as f:
        w("etc-userlist.txt", f.read())
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    secret = exchange("a", "b", salt, 4096)[4]
    w("mixed", '; comment\n# another\n"app" "secret"\n"admin" "md5%s"\n"scram" "%s"\n"quo""te" "pa""ss"\n\n'
      % (hashlib.md5(b"secretadmin").hexdigest(), secret))
    w("bad-secret", '"x" "SCRAM-SHA-256$0:AAAA$BBBB:CCCC"\n')
    w("unterminated", '"app" "secret\n')


# ---------------------------------------------------------------- JWT
def corpus_jwt():
    import jwt
    w = lambda n, d: write("jwt", n, d)
    secret = "0123456789abcdef0123456789abcdef-fuzz-secret"
    claims = {"iss": "https://issuer.example", "aud": "app1", "sub": "app", "exp": 1800000000, "iat": 1690000000,
              "nbf": 1690000000, "app_metadata": {"tenant": "acme"}}
    tok = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "k1"})
    w("hs256-valid", b"\0" + tok.encode())
    w("hs256-expired", b"\0" + jwt.encode(dict(claims, exp=1600000000), secret, algorithm="HS256").encode())
    w("alg-none", b"\0" + jwt.encode(claims, None, algorithm="none").encode())
    w("malformed", b"\0" + b"eyJhbGciOiJIUzI1NiJ9..")
    hdr = json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode()
    for name, c in [("claims-full", claims),
                    ("claims-aud-list", dict(claims, aud=["x", "app1"], sub="app")),
                    ("claims-cognito", {"iss": "https://b", "client_id": "app1", "token_use": "access",
                                        "exp": 1800000000, "sub": "u", "custom:tenant_id": "acme"}),
                    ("claims-types", {"iss": 5, "aud": None, "exp": "soon", "nbf": 1.5e300, "iat": -1,
                                      "app_metadata": ["acme"], "sub": {"a": 1}})]:
        w(name, b"\1" + hdr + b"\0" + json.dumps(c).encode())
    ec_jwk = {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256", "use": "sig",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    rsa_jwk = {"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig", "e": "AQAB",
               "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
    oct_jwk = {"kty": "oct", "kid": "k1", "alg": "HS256", "k": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=")}
    w("jwks-any", b"\2" + json.dumps({"keys": [ec_jwk, rsa_jwk, oct_jwk]}).encode())
    w("jwks-issuer", b"\6" + json.dumps({"keys": [oct_jwk]}).encode())
    w("jwks-bad", b"\2" + json.dumps({"keys": [{"kty": "EC", "crv": "P-999", "x": "", "y": "!!"}, 5, {}]}).encode())
    w("map-user", b"\3" + b"analyst=app_ro, admin = app_admin, *=app\0analyst")


# ---------------------------------------------------------------- secret files, audit
def corpus_secretfile():
    w = lambda n, d: write("secretfile", n, d)
    w("aws-json", json.dumps({"username": "app", "password": "s3cr3t!", "engine": "postgres",
                              "host": "db.example", "port": 5432, "dbname": "appdb"}))
    w("one-line", "hunter2\n")
    w("crlf", "hunter2\r\nsecond line\r\n")
    w("json-escapes", '  {"password": "p\\u00e9\\"\\n\\u0000x", "username": null}')
    w("json-bad", '{"password": 5}')
    w("empty", "")


def corpus_audit():
    w = lambda n, d: write("audit", n, d)
    head = bytes([0]) + struct.pack("<q", 1709251198123456)
    fields = ["acme", "user", "app", "appdb", "127.0.0.1:5000", "jwt", "https://issuer", "app", "why", "08P01",
              "SIGHUP"]
    w("login-all", head + "\0".join(fields).encode())
    w("hostile", bytes([0x21]) + struct.pack("<q", -1) +
      b"\0".join([b'a"b\nc\xff\xfe', b"\\u0000", b"\x7f\x01\x1f", b"\xc3\x28", b"\xe2\x82", b"\xf0\x9f\x98\x80",
                  b"\xed\xa0\x80", b"", b"}{", b"\t\r", b"SIGHUP"]))
    w("reload-only", bytes([0xff]) + struct.pack("<q", 86400000000) + b"\0" * 10 + b"SIGHUP")


# ---------------------------------------------------------------- transaction mode (prepare.c)
# fuzz_txn's steps (see the top of fuzz_txn.c): a settings byte, then a
# selector byte before each message.
def txn_settings(max_ps=4):
    return bytes([4 if max_ps == 100 else max_ps - 1])


def cl(*msgs, forget=False, other=False):
    """Client messages (the first one links the server if it is idle)."""
    sel = (4 if forget else 0) | (8 if other else 0)
    return b"".join(bytes([sel]) + m for m in msgs)


def sv(*msgs):
    return b"".join(b"\x01" + m for m in msgs)


BARRIER = b"\x02"
VANISH = b"\x03"
PARSE_OK = msg("1")
BIND_OK = msg("2")
CLOSE_OK = msg("3")
NO_DATA = msg("n")


def select_answer(tag="SELECT 1", rows=(("1",),)):
    return (rowdesc([("x", 23)]),) + tuple(datarow(r) for r in rows) + (complete(tag),)


def err(code, text):
    return error([("S", "ERROR"), ("V", "ERROR"), ("C", code), ("M", text)])


def corpus_txn():
    w = lambda n, d: write("txn", n, d)
    q1 = "SELECT * FROM accounts WHERE id = $1"
    q2 = "UPDATE accounts SET balance = balance + $2 WHERE id = $1"
    # asyncpg: Parse + Describe + Sync, then Bind/Execute/Sync per call
    asy = "__asyncpg_stmt_1__"
    w("asyncpg-prepare-then-run",
      txn_settings() + cl(parse(asy, q1, (20,)), describe("S", asy), SYNC) +
      sv(PARSE_OK, msg("t", struct.pack("!HI", 1, 20)), rowdesc([("id", 20)]), ready()) +
      cl(bind("", asy, [struct.pack("!q", 7)], (1,), (1,)), execute(""), SYNC) +
      sv(BIND_OK, datarow(["7"]), complete("SELECT 1"), ready()) +
      cl(bind("", asy, [struct.pack("!q", 8)], (1,), (1,)), execute(""), SYNC) +
      sv(BIND_OK, complete("SELECT 0"), ready()))
    # psycopg 3: after five uses the statement is prepared under _pg3_N
    pg3 = "_pg3_0"
    w("psycopg-prepared-pipeline",
      txn_settings() + cl(parse(pg3, q2, (20, 1700)), bind("", pg3, [b"1", b"10"]), describe("P", ""),
                          execute(""), SYNC) +
      sv(PARSE_OK, BIND_OK, NO_DATA, complete("UPDATE 1"), ready()) +
      cl(bind("", pg3, [b"2", b"5"]), describe("P", ""), execute(""), SYNC) +
      sv(BIND_OK, NO_DATA, complete("UPDATE 1"), ready()) +
      cl(query("DEALLOCATE " + pg3)) + sv(complete("DEALLOCATE"), ready()))
    # pgjdbc: BEGIN through the protocol, named S_n statements, in a transaction
    w("pgjdbc-transaction",
      txn_settings(2) + cl(parse("", "BEGIN"), bind("", "", []), execute(""),
                           parse("S_1", q2, (20, 1700)), bind("", "S_1", [b"1", b"10"]), describe("P", ""),
                           execute(""), SYNC) +
      sv(PARSE_OK, BIND_OK, complete("BEGIN"), PARSE_OK, BIND_OK, NO_DATA, complete("UPDATE 1"), ready("T")) +
      cl(parse("S_2", q1, (20,)), bind("", "S_2", [b"1"]), describe("P", ""), execute(""), SYNC) +
      sv(PARSE_OK, BIND_OK, *select_answer(), ready("T")) +
      cl(parse("", "COMMIT"), bind("", "", []), execute(""), SYNC) +
      sv(PARSE_OK, BIND_OK, complete("COMMIT"), ready("I")))
    # an error mid-pipeline: the server skips to the Sync, the failed Parse leaves nothing
    w("error-mid-pipeline",
      txn_settings() + cl(parse("s1", q1, (20,)), bind("", "s1", [b"1"]), execute(""),
                          parse("s2", "SELEC broken"), bind("", "s2", []), execute(""), SYNC) +
      sv(PARSE_OK, BIND_OK, *select_answer(), err("42601", 'syntax error at or near "SELEC"'),
         ready()) +
      cl(bind("", "s2", []), execute(""), SYNC) +
      sv(err("26000", 'prepared statement "s2" does not exist'), ready()) +
      cl(parse("s1", q1, (20,)), SYNC) + sv(err("42P05", 'prepared statement "s1" already exists'), ready()))
    w("error-in-transaction",
      txn_settings() + cl(query("BEGIN")) + sv(complete("BEGIN"), ready("T")) +
      cl(parse("a", q1, (20,)), bind("", "a", [b"x"]), execute(""), SYNC) +
      sv(PARSE_OK, err("22P02", "invalid input syntax for type bigint"), ready("E")) +
      cl(query("ROLLBACK")) + sv(complete("ROLLBACK"), ready("I")))
    # DEALLOCATE ALL and DISCARD ALL: the statements go, in the tag's place
    w("deallocate-all-discard-all",
      txn_settings() + cl(parse("a", q1, (20,)), parse("b", q2, (20, 1700)), SYNC) +
      sv(PARSE_OK, PARSE_OK, ready()) +
      cl(query("DEALLOCATE ALL")) + sv(complete("DEALLOCATE ALL"), ready()) +
      cl(bind("", "a", [b"1"]), execute(""), SYNC) +
      sv(err("26000", 'prepared statement "a" does not exist'), ready()) +
      cl(parse("c", q1, (20,)), bind("", "c", [b"1"]), execute(""), SYNC, query("DISCARD ALL")) +
      sv(PARSE_OK, BIND_OK, *select_answer(), ready(), complete("DISCARD ALL"), ready()) +
      cl(parse("", "DEALLOCATE ALL"), bind("", "", []), execute(""), SYNC) +
      sv(PARSE_OK, BIND_OK, complete("DEALLOCATE ALL"), ready()))
    # two clients in turn on one server: the same text is shared, another one is prepared
    for keep in (True, False):
        w("two-clients-" + ("keep" if keep else "forget"),
          txn_settings() + cl(parse("s", q1, (20,)), bind("", "s", [b"1"]), execute(""), SYNC) +
          sv(PARSE_OK, BIND_OK, *select_answer(), ready()) +
          cl(parse("mine", q1, (20,)), bind("", "mine", [b"2"]), execute(""), SYNC, other=True,
             forget=not keep) +
          sv(PARSE_OK, BIND_OK, *select_answer(), ready()) +
          cl(parse("other", q2, (20, 1700)), bind("", "other", [b"2", b"1"]), execute(""), SYNC) +
          sv(PARSE_OK, BIND_OK, complete("UPDATE 1"), ready()) +
          cl(bind("", "s", [b"3"]), execute(""), SYNC, other=True, forget=not keep) +
          sv(BIND_OK, *select_answer(), ready()))
    # more statements than max_prepared_statements (1 and 2): evictions and re-preparing
    for mx in (1, 2):
        steps = txn_settings(mx)
        for i in range(4):
            steps += cl(parse("q%d" % i, "SELECT %d + $1" % i, (23,)), bind("", "q%d" % i, [b"1"]), execute(""),
                        SYNC)
            steps += sv(*([CLOSE_OK] if i >= mx else []), PARSE_OK, BIND_OK, *select_answer(), ready())
        for i in (0, 3, 1):
            steps += cl(bind("", "q%d" % i, [b"2"]), execute(""), SYNC)
            steps += sv(CLOSE_OK, PARSE_OK, BIND_OK, *select_answer(), ready())
        w("evict-max%d" % mx, steps)
    # Close of a name, a Describe of it, and a pipeline across two Syncs with the answers late
    w("close-describe-two-syncs",
      txn_settings() + cl(parse("p", q1, (20,)), SYNC, describe("S", "p"), close("S", "p"), SYNC) +
      sv(PARSE_OK, ready()) + BARRIER +
      sv(msg("t", struct.pack("!HI", 1, 20)), rowdesc([("id", 20)]), ready()) + BARRIER)
    # the client goes away with requests in flight
    w("client-vanishes",
      txn_settings() + cl(parse("v", q1, (20,)), bind("", "v", [b"1"]), execute("")) + VANISH +
      sv(PARSE_OK, BIND_OK, *select_answer(), ready()))
    # an error before an eviction and the evicted statement's re-preparing, in one
    # segment: all skipped, the server still has the statement (fixed in prepare.c;
    # crash-evict-reprepare-skipped has the answers the bug expected)
    w("evict-reprepare-skipped",
      txn_settings(1) + cl(parse("a", q1, (20,)), SYNC) + sv(PARSE_OK, ready()) +
      cl(parse("", "SELEC broken"), parse("b", q2, (20, 1700)), bind("", "a", [b"1"]), execute(""), SYNC) +
      sv(err("42601", "syntax error"), ready()) +
      cl(bind("", "a", [b"1"]), execute(""), SYNC) + sv(BIND_OK, *select_answer(), ready()))
    # the same across Sync segments: the second one, sent before any answer, prepares
    # the evicted statement again although the server still has it (fixed in prepare.c:
    # it is closed first; crash-evict-across-segments has the answers the bug expected)
    w("evict-across-segments",
      txn_settings(1) + cl(parse("a", q1, (20,)), SYNC) + sv(PARSE_OK, ready()) +
      cl(parse("", "SELEC broken"), parse("b", q2, (20, 1700)), SYNC, bind("", "a", [b"1"]), execute(""), SYNC) +
      sv(err("42601", "syntax error"), ready(), CLOSE_OK, CLOSE_OK, PARSE_OK, BIND_OK, *select_answer(), ready()) +
      cl(bind("", "a", [b"2"]), execute(""), SYNC) + sv(BIND_OK, *select_answer(), ready()))
    # ... and evicted once more in that second segment: undoing the first eviction must
    # not bring it back (the server closed it again); an error there leaves it "unknown"
    q3 = "SELECT 3"
    pipe = (txn_settings(1) + cl(parse("a", q1, (20,)), SYNC) + sv(PARSE_OK, ready()) +
            cl(parse("", "SELEC broken"), parse("b", q2, (20, 1700)), SYNC, bind("", "a", [b"1"]), execute(""),
               parse("c", q3), SYNC) +
            sv(err("42601", "syntax error"), ready(), CLOSE_OK, CLOSE_OK, PARSE_OK, BIND_OK))
    again = cl(bind("", "a", [b"2"]), execute(""), SYNC) + sv(CLOSE_OK, PARSE_OK, BIND_OK, *select_answer(), ready())
    w("evict-across-segments-twice", pipe + sv(*select_answer(), CLOSE_OK, PARSE_OK, ready()) + again)
    w("evict-across-segments-twice-error", pipe + sv(err("22012", "division by zero"), ready()) + again)
    # more names than the maps' first sizes (16 per client, 16 per server)
    w("many-names", txn_settings(100) + cl(*([parse("n%d" % i, "SELECT %d" % i) for i in range(20)] + [SYNC])) + sv(*([PARSE_OK] * 20), ready()) +
      cl(*(bind("", "n%d" % i, []) for i in range(20)), SYNC) + sv(*([BIND_OK] * 20), ready()))
    # a simple Query first (untracked), then the extended protocol behind it
    w("untracked-then-named",
      txn_settings() + cl(query("SELECT 1"), parse("n", q1, (20,)), bind("", "n", [b"1"]), execute(""), SYNC) +
      sv(*select_answer(), ready(), PARSE_OK, BIND_OK, *select_answer(), ready()))


def main():
    for f in (corpus_startup, corpus_client, corpus_server, corpus_scram, corpus_config, corpus_userlist,
              corpus_jwt, corpus_secretfile, corpus_audit, corpus_txn):
        f()
    return 0


if __name__ == "__main__":
    sys.exit(main())
