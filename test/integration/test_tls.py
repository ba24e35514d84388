"""TLS on both sides (issue P7): certificates the suite makes with `openssl`
(tlscerts.py), a PostgreSQL of its own that speaks only TLS (ssl = on,
hostssl rules, plaintext TCP refused), and pgtenant between them.

Client side: libpq's sslmode require / verify-ca / verify-full through
pgtenant, certificate and host name checks on the client, client
certificates checked by pgtenant (client_tls_sslmode verify-ca and
verify-full), plaintext refused with 28000 when TLS is required, plaintext
pipelined after an SSLRequest, PostgreSQL 17's direct TLS with ALPN, the
tenant taken from the TLS server name (SNI), SCRAM-SHA-256-PLUS channel
binding, certificates re-read on RELOAD, hostile handshakes.  Server side:
server_tls_sslmode verify-full / verify-ca / require against the TLS
PostgreSQL (names, IP addresses, the wrong CA, a plaintext-only server,
a per-database sslmode), pgtenant's own client certificate for `cert`
authentication.  Throughput: a 200 MB COPY each way and pgbench -S -c 64
with TLS on both sides.  /metrics counts handshakes and failures.
"""
import asyncio
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import types
import zlib

import asyncpg
import psycopg
import pytest

import pgwire
from conftest import APP_PASSWORD, PG_BIN, Bouncer, Postgres, as_pg_user, free_port, login_error
from test_metrics import parse, scrape
from tlscerts import CertMaker, client_context, client_hello, ssl_request, tls_connect

TLS_COLUMN = re.compile(r"^TLSv1\.[23]/[A-Za-z0-9_-]+$")
SUFFIX = ".db.example.com"
TENANTS = ("acme", "globex")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    m = CertMaker(tmp_path_factory.mktemp("tls"))
    c = types.SimpleNamespace(dir=m.dir)
    c.ca = m.ca("ca", "pgtenant test CA")
    c.wrong_ca = m.ca("wrong-ca", "some other CA")
    san = ("DNS:*.db.example.com", "DNS:localhost", "IP:127.0.0.1")
    c.server = m.issue("pgtenant", "pgtenant one", c.ca, san)
    c.server2 = m.issue("pgtenant2", "pgtenant two", c.ca, san)  # for the RELOAD test
    c.pg = m.issue("postgres", "postgres test server", c.ca, ("DNS:localhost", "IP:127.0.0.1"))  # not 127.0.0.2
    c.app = m.issue("app", "app", c.ca, client=True)
    c.app_acme = m.issue("app.acme", "app.acme", c.ca, client=True)
    c.other = m.issue("other", "other", c.ca, client=True)
    c.app_wrong_ca = m.issue("app-wrong-ca", "app", c.wrong_ca, client=True)
    c.certuser = m.issue("certuser", "certuser", c.ca, client=True)
    return c


class TLSPostgres(Postgres):
    """conftest's PostgreSQL, then turned into one that speaks only TLS:
    ssl = on with the test CA's server certificate (names localhost and
    127.0.0.1, not 127.0.0.2), listening on 127.0.0.1 and 127.0.0.2,
    plaintext TCP refused by pg_hba, `cert` authentication for certuser."""

    def __init__(self, certs):
        super().__init__()
        owner = "postgres" if os.geteuid() == 0 else None
        certs.pg.install(self.data, "server", owner)
        shutil.copyfile(certs.ca.cert, os.path.join(self.data, "root.crt"))
        if owner:
            shutil.chown(os.path.join(self.data, "root.crt"), owner)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:  # later lines win
            f.write("listen_addresses = '127.0.0.1,127.0.0.2'\nssl = on\nssl_cert_file = 'server.crt'\n"
                    "ssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "hostssl all certuser 127.0.0.1/32 cert\n"
                    "hostssl all app 127.0.0.0/8 scram-sha-256\n"
                    "hostssl all all 127.0.0.0/8 trust\n"
                    "hostnossl all all 0.0.0.0/0 reject\n")
        self.sql("CREATE USER certuser")
        subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l",
                                       os.path.join(self.dir, "log"), "-w", "restart"],
                       check=True, stdout=subprocess.DEVNULL)

    def ssl_backends(self, user="app"):
        """(ssl, client_dn) of every client backend of user in appdb."""
        return self.sql("SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_ssl s JOIN pg_stat_activity a "
                        "USING (pid) WHERE a.usename = '%s' AND a.datname = 'appdb' "
                        "AND a.backend_type = 'client backend'" % user)


@pytest.fixture(scope="module")
def tlspg(certs):
    server = TLSPostgres(certs)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_schemas(tlspg):
    with tlspg.connect("appdb", "app") as conn:
        for t in TENANTS:
            conn.execute("drop schema if exists tenant_%s cascade" % t)
            conn.execute("create schema tenant_%s" % t)
            conn.execute("create table tenant_%s.items(id int, owner text)" % t)
            conn.execute("insert into tenant_%s.items select g, '%s' from generate_series(1, 3) g" % (t, t))
            conn.execute("create table tenant_%s.notes(owner text, n int)" % t)
    return TENANTS


@pytest.fixture
def tls_factory(tlspg, certs, tmp_path):
    """pgtenant in front of the TLS PostgreSQL: TLS required from clients
    (pgtenant's certificate names *.db.example.com, localhost, 127.0.0.1),
    server_tls_sslmode verify-full against the test CA.  settings override."""
    made = []

    def make(settings=None, databases=None, users=None, tenants=None):
        s = {"client_tls_sslmode": "require", "client_tls_cert_file": certs.server.cert,
             "client_tls_key_file": certs.server.key, "client_tls_ca_file": certs.ca.cert,
             "server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.ca.cert}
        s.update(settings or {})
        d = tmp_path / ("b%d" % len(made))
        d.mkdir()
        b = Bouncer(tlspg, str(d), settings=s, databases=databases, users=users, tenants=tenants)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def tenant_bouncer(tls_factory, settings=None, tenants=None):
    s = {"tenant_required": "yes", "tenant_setting": "app.tenant_id", "tenant_sni_suffix": SUFFIX}
    s.update(settings or {})
    t = {"acme": "pool_size=2", "globex": "pool_size=2"}
    t.update(tenants or {})
    return tls_factory(settings=s, tenants=t)


# ---------------------------------------------------------------- helpers

def db_entry(port, host="127.0.0.1", user="app", extra=""):
    pw = " password=%s" % APP_PASSWORD if user == "app" else ""
    return ("host=%s port=%d dbname=appdb user=%s%s %s" % (host, port, user, pw, extra)).strip()


def sni_connect(b, host, certs, user="app", **kw):
    """libpq with verify-full against the test CA, TCP to 127.0.0.1 and
    host as the name it checks and sends as SNI."""
    return b.connect(user=user, password=APP_PASSWORD, sslmode="verify-full", sslrootcert=certs.ca.cert,
                     host=host, hostaddr="127.0.0.1", **kw)


def client_rows(b):
    return {r["application_name"]: r for r in b.admin("SHOW CLIENTS") if r["application_name"]}


def tls_login_error(b, ctx, user="app", dbname="appdb", password=APP_PASSWORD, server_settings=None, direct=False):
    """Log in with asyncpg over TLS (ctx: an ssl client context, maybe with
    a client certificate); asyncpg reports the SQLSTATE of a refused login.
    Returns (sqlstate, message), ("failed", why) when the connection broke
    without an ErrorResponse (a failed handshake), or (None, None)."""
    async def attempt():
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=b.port, user=user, database=dbname,
                                         password=password, ssl=ctx, direct_tls=direct,
                                         server_settings=server_settings or {}, statement_cache_size=0,
                                         timeout=10)
        except asyncpg.PostgresError as e:
            return e.sqlstate, str(e)
        except Exception as e:  # noqa: BLE001 - ssl errors, resets, EOF: a broken connection
            return "failed", repr(e)
        try:
            await conn.fetchval("select 1")
        except asyncpg.PostgresError as e:
            return e.sqlstate, str(e)
        finally:
            await conn.close()
        return None, None

    return asyncio.run(attempt())


def scram(s, password, cbind=None, mechanism=None):
    """Client side of SCRAM-SHA-256 on a socket that just got
    AuthenticationSASL; cbind: tls-server-end-point data for
    SCRAM-SHA-256-PLUS.  Returns None when the server accepted the proof,
    else the ErrorResponse fields."""
    import base64
    import hashlib
    import hmac
    gs2 = "p=tls-server-end-point,," if cbind is not None else "n,,"
    mechanism = mechanism or ("SCRAM-SHA-256-PLUS" if cbind is not None else "SCRAM-SHA-256")
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=,r=" + nonce
    first = (gs2 + first_bare).encode()
    s.sendall(pgwire.msg(b"p", mechanism.encode() + b"\0" + struct.pack("!I", len(first)) + first))
    t, body = pgwire.recv_msg(s)
    if t == b"E":
        return pgwire.error_fields(body)
    assert t == b"R" and struct.unpack("!I", body[:4])[0] == 11, (t, body)
    server_first = body[4:].decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    c = base64.b64encode(gs2.encode() + (cbind or b"")).decode()
    without_proof = "c=%s,r=%s" % (c, attrs["r"])
    auth_msg = ",".join([first_bare, server_first, without_proof]).encode()
    sig = hmac.new(stored, auth_msg, "sha256").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
    s.sendall(pgwire.msg(b"p", (without_proof + ",p=" + proof).encode()))
    t, body = pgwire.recv_msg(s)
    if t == b"E":
        return pgwire.error_fields(body)
    assert t == b"R" and struct.unpack("!I", body[:4])[0] == 12, (t, body)
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    want = base64.b64encode(hmac.new(server_key, auth_msg, "sha256").digest()).decode()
    assert body[4:].decode() == "v=" + want  # the server knew the password too
    return None


def raw_login(s, user="app", database="appdb", password=APP_PASSWORD, params=None, cbind=None, mechanism=None):
    """Startup + authentication on an already set up (TLS or plain) socket.
    Returns (mechanisms offered, None) once ReadyForQuery arrived, or
    (mechanisms, ErrorResponse fields)."""
    p = {"user": user, "database": database}
    p.update(params or {})
    s.sendall(pgwire.startup_packet(p))
    mechs = set()
    while True:
        t, body = pgwire.recv_msg(s)
        if t == b"E":
            return mechs, pgwire.error_fields(body)
        if t == b"Z":
            return mechs, None
        if t == b"R":
            code = struct.unpack("!I", body[:4])[0]
            if code == 10:
                mechs = {m.decode() for m in body[4:].split(b"\0") if m}
                err = scram(s, password, cbind, mechanism)
                if err:
                    return mechs, err
            elif code != 0:
                raise AssertionError("unexpected authentication request %d" % code)


def raw_query(s, sql):
    return pgwire.result(pgwire.query(s, sql))[1]


def closed_within(s, timeout):
    """Read and discard until the peer closes; return the seconds that took,
    or None if it was still open after timeout."""
    t0 = time.time()
    while True:
        left = timeout - (time.time() - t0)
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            if not s.recv(65536):
                return time.time() - t0
        except (socket.timeout, TimeoutError):
            return None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return time.time() - t0


def direct_attempt(port, ctx):
    """A direct TLS handshake with ctx, then a StartupMessage: what came of it
    ("handshake failed", "closed", or the type of the first message)."""
    try:
        s = tls_connect(port, ctx, direct=True)
    except (ssl.SSLError, OSError):
        return "handshake failed"
    try:
        s.sendall(pgwire.startup_packet({"user": "app", "database": "appdb"}))
        t, _ = pgwire.recv_msg(s)
        return t
    except (ssl.SSLError, OSError, EOFError):
        return "closed"
    finally:
        s.close()


def peer_der(b):
    """The certificate pgtenant presents to a new handshake (after an SSLRequest)."""
    s = tls_connect(b.port)
    try:
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def wait_for(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def reload_and_wait(b, pattern):
    """RELOAD through the admin console; wait for one more log line matching pattern."""
    n = b.log_contains(pattern)
    b.write_config()
    b.admin("RELOAD")
    assert wait_for(lambda: b.log_contains(pattern) > n), "no %r in the log after RELOAD:\n%s" % (
        pattern, b.log()[-3000:])


class FakeServer:
    """A TCP 'PostgreSQL' for server-side TLS failures.  It answers the
    SSLRequest with `reply`; then either, once the client has sent more (its
    ClientHello), with `after`; or, given tls (an ssl server context), runs
    a real handshake, counting handshakes and StartupMessages that arrive
    over them."""

    def __init__(self, reply, after=None, tls=None):
        self.reply, self.after, self.tls = reply, after, tls
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = self.handshakes = self.startups = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            pgwire.recv_exact(conn, 8)
            conn.sendall(self.reply)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                self.handshakes += 1
                if conn.recv(65536):
                    self.startups += 1
            elif self.after is not None:
                conn.recv(65536)
                conn.sendall(self.after)
            while conn.recv(65536):
                pass
        except (OSError, EOFError):
            pass
        finally:
            conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def tls_metric(samples, name, side):
    """A TLS counter's value (0 while the series does not exist yet)."""
    return samples.get((name, (("side", side),)), 0.0)


# ---------------------------------------------------------------- the TLS PostgreSQL itself

def test_tls_postgres_refuses_plaintext(tlspg, certs):
    """The fixture is what the other tests assume: plaintext TCP refused by
    PostgreSQL, verify-full works for 127.0.0.1 and not for 127.0.0.2 (its
    certificate does not name it), certuser logs in by certificate only."""
    direct = dict(port=tlspg.port, dbname="appdb", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(host="127.0.0.1", user="trustuser", sslmode="disable", **direct)
    assert "no encryption" in str(e.value)
    with psycopg.connect(host="localhost", hostaddr="127.0.0.1", user="app", password=APP_PASSWORD,
                         sslmode="verify-full", sslrootcert=certs.ca.cert, **direct) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(host="127.0.0.2", user="app", password=APP_PASSWORD, sslmode="verify-full",
                        sslrootcert=certs.ca.cert, **direct)
    assert "does not match host name" in str(e.value)
    with psycopg.connect(host="127.0.0.2", user="app", password=APP_PASSWORD, sslmode="verify-ca",
                         sslrootcert=certs.ca.cert, **direct) as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    with psycopg.connect(host="127.0.0.1", user="certuser", sslmode="require", sslcert=certs.certuser.cert,
                         sslkey=certs.certuser.key, **direct) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "certuser"
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(host="127.0.0.1", user="certuser", sslmode="require", sslcert="/nonexistent.crt",
                        **direct)
    assert "certificate" in str(e.value)


# ---------------------------------------------------------------- client side

def test_client_sslmodes_through_pgtenant(tls_factory, tlspg, certs):
    """sslmode require, verify-ca and verify-full (SNI and host name
    acme.db.example.com, TCP to 127.0.0.1) through pgtenant; SHOW CLIENTS
    says TLS for each; pgtenant's server connections are TLS too (SHOW
    SERVERS, pg_stat_ssl on the server); psql gets through with verify-full."""
    b = tls_factory()
    modes = {"require": {},
             "verify-ca": {"sslrootcert": certs.ca.cert},
             "verify-full": {"sslrootcert": certs.ca.cert, "host": "acme.db.example.com", "hostaddr": "127.0.0.1"}}
    conns = []
    try:
        for mode, kw in modes.items():
            conn = b.connect(sslmode=mode, application_name="tls-" + mode, **kw)
            conns.append(conn)
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select %s::text", [mode]).fetchone()[0] == mode
        clients = client_rows(b)
        for mode in modes:
            assert TLS_COLUMN.match(clients["tls-" + mode]["tls"]), clients["tls-" + mode]
        servers = [s for s in b.admin("SHOW SERVERS") if s["database"] == "appdb"]
        assert servers and all(TLS_COLUMN.match(s["tls"]) for s in servers), servers
        backends = tlspg.ssl_backends()
        assert backends and all(ssl_on for ssl_on, _ in backends), backends
    finally:
        for c in conns:
            c.close()
    dsn = b.dsn(sslmode="verify-full", sslrootcert=certs.ca.cert, host="acme.db.example.com",
                hostaddr="127.0.0.1")
    r = subprocess.run([os.path.join(PG_BIN, "psql"), dsn, "-Atc", "select 'psql over ' || 'tls'"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "psql over tls", r.stdout + r.stderr


def test_client_checks_pgtenant_certificate(tls_factory, certs):
    """A client trusting another CA, or checking another host name, refuses
    pgtenant's certificate; the right CA and a name it carries pass."""
    b = tls_factory()
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(sslmode="verify-ca", sslrootcert=certs.wrong_ca.cert)
    assert "certificate verify failed" in str(e.value)
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(sslmode="verify-full", sslrootcert=certs.ca.cert, host="acme.other.example.org",
                  hostaddr="127.0.0.1")
    assert "does not match host name" in str(e.value)
    for host in ("localhost", "127.0.0.1", "globex.db.example.com"):
        with b.connect(sslmode="verify-full", sslrootcert=certs.ca.cert, host=host, hostaddr="127.0.0.1") as c:
            assert c.execute("select 1").fetchone()[0] == 1


def test_plaintext_refused_when_tls_required(tls_factory, certs):
    """client_tls_sslmode = require: a plaintext TCP login gets FATAL 28000
    'TLS required'; a unix socket is exempt.  prefer: both are served, and
    SHOW CLIENTS tells them apart.  disable: SSLRequest answered 'N'."""
    sockdir = tempfile.mkdtemp(prefix="pgt-tls-")
    try:
        b = tls_factory(settings={"unix_socket_dir": sockdir})
        code, msg = login_error(b)
        assert code == "28000" and msg.startswith("TLS required"), (code, msg)
        with pytest.raises(psycopg.OperationalError) as e:
            b.connect(sslmode="disable")
        assert "TLS required" in str(e.value)
        with psycopg.connect(host=sockdir, port=b.port, user="app", dbname="appdb", password=APP_PASSWORD,
                             sslmode="disable") as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
        with b.connect(sslmode="prefer") as conn:  # libpq's default: TLS when offered
            assert conn.pgconn.ssl_in_use
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    b2 = tls_factory(settings={"client_tls_sslmode": "prefer"})
    assert login_error(b2) == (None, None)
    with b2.connect(sslmode="disable", application_name="plain") as plain, \
            b2.connect(sslmode="require", application_name="tls") as tls:
        assert not plain.pgconn.ssl_in_use and tls.pgconn.ssl_in_use
        clients = client_rows(b2)
        assert clients["plain"]["tls"] == "" and TLS_COLUMN.match(clients["tls"]["tls"]), clients
    b3 = tls_factory(settings={"client_tls_sslmode": "disable"})
    s, answer = ssl_request(b3.port)
    s.close()
    assert answer == b"N"


def test_client_certificate_verify_ca(tls_factory, certs):
    """client_tls_sslmode = verify-ca: no certificate -> 28000; a certificate
    from another CA fails the handshake; any certificate from the CA passes,
    whatever its CN."""
    b = tls_factory(settings={"client_tls_sslmode": "verify-ca"})
    code, msg = tls_login_error(b, client_context(certs.ca.cert))
    assert code == "28000" and msg.startswith("connection requires a valid client certificate"), (code, msg)
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(sslmode="require", sslcert="/nonexistent/postgresql.crt", sslkey="/nonexistent/postgresql.key")
    assert "connection requires a valid client certificate" in str(e.value)
    code, msg = tls_login_error(b, client_context(certs.ca.cert, cert=certs.app_wrong_ca))
    assert code not in (None, "28000"), (code, msg)  # refused in the handshake, not after it
    with pytest.raises(psycopg.OperationalError):
        b.connect(sslmode="require", sslcert=certs.app_wrong_ca.cert, sslkey=certs.app_wrong_ca.key)
    assert tls_login_error(b, client_context(certs.ca.cert, cert=certs.app)) == (None, None)
    with b.connect(sslmode="verify-full", sslrootcert=certs.ca.cert, host="localhost", hostaddr="127.0.0.1",
                   sslcert=certs.app.cert, sslkey=certs.app.key) as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    with b.connect(sslmode="require", sslcert=certs.other.cert, sslkey=certs.other.key) as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_client_certificate_verify_full(tls_factory, tls_schemas, certs):
    """client_tls_sslmode = verify-full: the certificate's CN must equal the
    user name as sent (app, or app.acme with the tenant in it)."""
    b = tls_factory(settings={"client_tls_sslmode": "verify-full", "tenant_setting": "app.tenant_id"},
                    tenants={"acme": "pool_size=2"})
    with b.connect(sslmode="require", sslcert=certs.app.cert, sslkey=certs.app.key) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "app"
    with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="require", sslcert=certs.app_acme.cert,
                   sslkey=certs.app_acme.key) as conn:
        assert conn.execute("select current_setting('app.tenant_id')").fetchone()[0] == "acme"
    code, msg = tls_login_error(b, client_context(cert=certs.other))
    assert code == "28000" and msg.startswith('certificate authentication failed for user "app"'), (code, msg)
    code, msg = tls_login_error(b, client_context(cert=certs.app), user="app.acme")
    assert code == "28000" and msg.startswith('certificate authentication failed for user "app.acme"'), (code, msg)
    code, msg = tls_login_error(b, client_context())
    assert code == "28000" and msg.startswith("connection requires a valid client certificate"), (code, msg)
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(sslmode="require", sslcert=certs.other.cert, sslkey=certs.other.key)
    assert "certificate authentication failed" in str(e.value)


def test_unencrypted_data_after_ssl_request(tls_factory):
    """An SSLRequest with a plaintext StartupMessage pipelined behind it in
    the same send (bytes a man in the middle could have put there): FATAL
    08P01 in plaintext, and no login.  (PostgreSQL 17 sends the error
    instead of the 'S'; an 'S' first is tolerated here.)"""
    b = tls_factory()
    s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    s.sendall(struct.pack("!II", 8, 80877103) + pgwire.startup_packet({"user": "app", "database": "appdb"}))
    first = pgwire.recv_exact(s, 1)
    if first == b"S":
        t, body = pgwire.recv_msg(s)
    else:
        rest = pgwire.recv_exact(s, 4)
        t, body = first, pgwire.recv_exact(s, struct.unpack("!I", rest)[0] - 4)
    fields = pgwire.error_fields(body)
    assert t == b"E" and fields.get("C") == "08P01" and fields.get("S") == "FATAL", (first, t, fields)
    assert "received unencrypted data after SSL request" in fields["M"], fields
    assert closed_within(s, 5) is not None
    s.close()
    with b.connect(sslmode="require") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_direct_tls_with_alpn(tls_factory, certs):
    """PostgreSQL 17's direct TLS: a ClientHello as the first bytes with ALPN
    "postgresql", then SCRAM and a query, from a raw Python ssl client and
    from asyncpg.  Without ALPN, or with client TLS disabled, no login."""
    b = tls_factory()
    ctx = client_context(certs.ca.cert, alpn=["postgresql"], check_hostname=True)
    s = tls_connect(b.port, ctx, server_hostname="localhost", direct=True)
    try:
        assert s.selected_alpn_protocol() == "postgresql"
        assert s.getpeercert(binary_form=True) == certs.server.der()
        mechs, err = raw_login(s, params={"application_name": "direct"})
        assert err is None, err
        assert mechs == {"SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"}, mechs
        assert raw_query(s, "select 40 + 2") == [["42"]]
        assert TLS_COLUMN.match(client_rows(b)["direct"]["tls"])
    finally:
        s.close()
    assert tls_login_error(b, client_context(alpn=["postgresql"]), direct=True) == (None, None)
    assert direct_attempt(b.port, client_context()) in ("handshake failed", "closed")
    assert direct_attempt(b.port, client_context(alpn=["http/1.1"])) in ("handshake failed", "closed")
    off = tls_factory(settings={"client_tls_sslmode": "disable"})
    assert direct_attempt(off.port, client_context(alpn=["postgresql"])) in ("handshake failed", "closed")
    with b.connect(sslmode="require") as conn:  # still serving
        assert conn.execute("select 1").fetchone()[0] == 1


def test_client_tls_protocols_and_ciphers(tls_factory, certs):
    """client_tls_protocols / client_tls_ciphers are applied, and SHOW CLIENTS
    shows "<protocol>/<cipher>" as negotiated."""
    cipher = "ECDHE-ECDSA-AES128-GCM-SHA256"  # the test certificates are EC
    b = tls_factory(settings={"client_tls_protocols": "tlsv1.2", "client_tls_ciphers": cipher})
    s = tls_connect(b.port)
    try:
        assert s.version() == "TLSv1.2" and s.cipher()[0] == cipher, (s.version(), s.cipher())
        mechs, err = raw_login(s, params={"application_name": "tls12"})
        assert err is None, err
        assert client_rows(b)["tls12"]["tls"] == "TLSv1.2/" + cipher
    finally:
        s.close()
    with pytest.raises((ssl.SSLError, OSError)):
        tls_connect(b.port, client_context(minimum=ssl.TLSVersion.TLSv1_3)).close()
    secure = tls_factory()  # default protocols (secure): a modern client gets TLS 1.3
    s = tls_connect(secure.port)
    assert s.version() == "TLSv1.3"
    s.close()


# ---------------------------------------------------------------- tenants from SNI

def test_tenant_from_sni(tls_factory, tls_schemas, certs):
    """tenant_sni_suffix = .db.example.com: acme.db.example.com names tenant
    acme on its own; with the user suffix it must agree; a name outside the
    suffix names no tenant; a prefix that is no valid id is refused."""
    b = tenant_bouncer(tls_factory)
    with sni_connect(b, "acme.db.example.com", certs, application_name="sni-acme") as conn:
        assert conn.execute("show search_path").fetchone()[0] == '"tenant_acme", public'
        assert {r[0] for r in conn.execute("select owner from items")} == {"acme"}
        assert conn.execute("select current_setting('app.tenant_id')").fetchone()[0] == "acme"
        assert client_rows(b)["sni-acme"]["tenant"] == "acme"
    with sni_connect(b, "globex.db.example.com", certs) as conn:
        assert conn.execute("show search_path").fetchone()[0] == '"tenant_globex", public'
    with sni_connect(b, "acme.db.example.com", certs, user="app.acme") as conn:
        assert conn.execute("show search_path").fetchone()[0] == '"tenant_acme", public'
    with pytest.raises(psycopg.OperationalError) as e:
        sni_connect(b, "acme.db.example.com", certs, user="app.globex")
    assert "conflicting tenant" in str(e.value)
    with pytest.raises(psycopg.OperationalError) as e:
        sni_connect(b, "acme.db.example.com", certs, options="-c tenant=globex")
    assert "conflicting tenant" in str(e.value)
    with pytest.raises(psycopg.OperationalError) as e:
        sni_connect(b, "localhost", certs)  # no tenant from a name outside the suffix
    assert "no tenant given" in str(e.value)
    with pytest.raises(psycopg.OperationalError) as e:
        sni_connect(b, "ac-me.db.example.com", certs)
    assert "invalid tenant id" in str(e.value)
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(sslmode="require", host="x.acme.db.example.com", hostaddr="127.0.0.1")
    assert "invalid tenant id" in str(e.value)
    # a raw direct-TLS client's server name names the tenant too
    ctx = client_context(certs.ca.cert, alpn=["postgresql"], check_hostname=True)
    s = tls_connect(b.port, ctx, server_hostname="globex.db.example.com", direct=True)
    try:
        _, err = raw_login(s)
        assert err is None, err
        assert raw_query(s, "show search_path") == [['"tenant_globex", public']]
    finally:
        s.close()


def test_empty_sni_suffix_names_no_tenant(tls_factory, tls_schemas, certs):
    b = tenant_bouncer(tls_factory, settings={"tenant_sni_suffix": ""})
    with pytest.raises(psycopg.OperationalError) as e:
        sni_connect(b, "acme.db.example.com", certs)
    assert "no tenant given" in str(e.value)
    with sni_connect(b, "acme.db.example.com", certs, user="app.globex") as conn:  # no conflict either
        assert conn.execute("show search_path").fetchone()[0] == '"tenant_globex", public'


def test_sni_tenants_isolated_under_concurrency(tls_factory, tls_schemas, tlspg, certs):
    """Two tenants named only by SNI, 4 clients each reconnecting 4 times,
    over pools of 1 and 2: every client sees only its tenant's rows and its
    own search_path, every time; the rows land in the right schemas."""
    with tlspg.connect("appdb", "app") as conn:
        for t in TENANTS:
            conn.execute("truncate tenant_%s.notes" % t)
    b = tenant_bouncer(tls_factory, tenants={"acme": "pool_size=1", "globex": "pool_size=2"})
    errors = []

    def worker(tenant, n):
        try:
            for rnd in range(4):
                with sni_connect(b, "%s.db.example.com" % tenant, certs) as conn:
                    for i in range(25):
                        conn.execute("insert into notes values (%s, %s)", [tenant, n * 1000 + rnd * 100 + i])
                        seen = {r[0] for r in conn.execute("select owner from notes")}
                        path = conn.execute("show search_path").fetchone()[0]
                        tid = conn.execute("select current_setting('app.tenant_id')").fetchone()[0]
                        if seen != {tenant} or path != '"tenant_%s", public' % tenant or tid != tenant:
                            errors.append((tenant, n, rnd, i, seen, path, tid))
        except Exception as e:  # noqa: BLE001 - report any failure
            errors.append((tenant, n, repr(e)))

    threads = [threading.Thread(target=worker, args=(t, n)) for t in TENANTS for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    for t in TENANTS:
        rows = tlspg.sql("select owner, count(*) from tenant_%s.notes group by owner" % t, dbname="appdb")
        assert rows == [(t, 400)], (t, rows)


# ---------------------------------------------------------------- channel binding

def test_channel_binding(tls_factory, certs):
    """SCRAM-SHA-256-PLUS: libpq's channel_binding=require succeeds over TLS
    and fails over plaintext (libpq's own refusal); plain SCRAM still works
    over TLS; a wrong password still fails; pgtenant checks the binding data
    (a PLUS exchange bound to another certificate is refused)."""
    b = tls_factory(settings={"client_tls_sslmode": "prefer"})
    with b.connect(sslmode="require", channel_binding="require") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    with b.connect(sslmode="require", channel_binding="disable") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(sslmode="require", channel_binding="require", password="wrong")
    assert "password authentication failed" in str(e.value)
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(sslmode="disable", channel_binding="require")
    assert "channel binding" in str(e.value)
    with b.connect(sslmode="disable") as conn:  # plaintext SCRAM is fine without the requirement
        assert conn.execute("select 1").fetchone()[0] == 1
    # by hand: PLUS with the right end-point hash, and with another certificate's
    s = tls_connect(b.port)
    mechs, err = raw_login(s, cbind=certs.server.end_point_hash())
    assert err is None and "SCRAM-SHA-256-PLUS" in mechs, (mechs, err)
    assert raw_query(s, "select 'bound'") == [["bound"]]
    s.close()
    s = tls_connect(b.port)
    _, err = raw_login(s, cbind=certs.server2.end_point_hash())
    assert err is not None and err["S"] == "FATAL", err
    s.close()
    # plaintext: PLUS is not offered, and asking for it is refused
    s = pgwire.connect(b)
    mechs, err = raw_login(s)
    assert err is None and mechs == {"SCRAM-SHA-256"}, (mechs, err)
    s.close()
    s = pgwire.connect(b)
    _, err = raw_login(s, cbind=certs.server.end_point_hash())
    assert err is not None, "SCRAM-SHA-256-PLUS accepted over plaintext"
    s.close()


# ---------------------------------------------------------------- server side

def test_server_tls_modes(tls_factory, tlspg, pg, certs):
    """server_tls_sslmode verify-full against the test CA: 127.0.0.1 (an IP
    SAN) and localhost (a DNS SAN) pass, 127.0.0.2 (not in the certificate)
    is refused with 08006 but passes with a per-database sslmode=verify-ca;
    a plaintext-only server is refused, or served with sslmode=disable in its
    entry; a server that pipelines plaintext (an AuthenticationOk) behind its
    'S' is refused before any StartupMessage goes to it, even though a valid
    handshake would follow.  Without a client certificate the `cert` hba
    line refuses certuser."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.pg.cert, certs.pg.key)
    fake = FakeServer(b"S" + pgwire.msg(b"R", struct.pack("!I", 0)), tls=server_ctx)
    # 'S' and the start of a TLS record, then silence: refused at once, not
    # after server_connect_timeout waiting for the rest of the record
    silent = FakeServer(b"S\x16\x03\x03\x00\x50")
    try:
        b = tls_factory(settings={"client_tls_sslmode": "prefer", "server_connect_timeout": "15"}, databases={
            "ipdb": db_entry(tlspg.port),
            "namedb2": db_entry(tlspg.port, host="localhost"),
            "ip2db": db_entry(tlspg.port, host="127.0.0.2"),
            "ip2cadb": db_entry(tlspg.port, host="127.0.0.2", extra="sslmode=verify-ca"),
            "plaindb": db_entry(pg.port),
            "plainokdb": db_entry(pg.port, extra="sslmode=disable"),
            "certdb": db_entry(tlspg.port, user="certuser"),
            "fakedb": db_entry(fake.port),
            "silentdb": db_entry(silent.port),
        })
        for db in ("ipdb", "namedb2", "ip2cadb", "plainokdb"):
            assert login_error(b, dbname=db) == (None, None), db
        for db in ("ip2db", "plaindb", "certdb", "fakedb"):
            code, msg = login_error(b, dbname=db)
            assert code == "08006" and "server connection failed" in msg, (db, code, msg)
        assert fake.connections >= 1 and fake.startups == 0, (fake.connections, fake.handshakes)
        t0 = time.time()
        code, msg = login_error(b, dbname="silentdb")
        assert code == "08006" and time.time() - t0 < 5, (code, msg, time.time() - t0)
        servers = {s["database"]: s for s in b.admin("SHOW SERVERS")}
        for db in ("ipdb", "namedb2", "ip2cadb"):
            assert TLS_COLUMN.match(servers[db]["tls"]), servers[db]
        assert servers["plainokdb"]["tls"] == ""
        # require: no verification, but no plaintext either
        b2 = tls_factory(settings={"client_tls_sslmode": "prefer", "server_tls_sslmode": "require",
                                   "server_tls_ca_file": ""}, databases={
            "ip2db": db_entry(tlspg.port, host="127.0.0.2"),
            "plaindb": db_entry(pg.port),
            "plainokdb": db_entry(pg.port, extra="sslmode=disable")})
        assert login_error(b2, dbname="ip2db") == (None, None)
        assert login_error(b2, dbname="plainokdb") == (None, None)
        code, msg = login_error(b2, dbname="plaindb")
        assert code == "08006" and "server connection failed" in msg, (code, msg)
    finally:
        fake.close()
        silent.close()
    b3 = tls_factory(settings={"client_tls_sslmode": "prefer", "server_tls_sslmode": "verify-ca",
                               "server_tls_ca_file": certs.wrong_ca.cert})
    code, msg = login_error(b3)
    assert code == "08006" and "server connection failed" in msg, (code, msg)


def test_server_sslmode_allow(tls_factory, tlspg, pg):
    """server_tls_sslmode allow, as libpq has it: plaintext first, so a server
    that takes plaintext gets no SSLRequest; a TLS-only server refuses the
    plaintext login, and pgtenant goes on with TLS for that entry."""
    b = tls_factory(settings={"client_tls_sslmode": "prefer", "server_tls_sslmode": "allow"}, databases={
        "tlsonly": db_entry(tlspg.port),
        "plainsrv": db_entry(pg.port),
    })
    assert login_error(b, dbname="plainsrv") == (None, None)
    assert login_error(b, dbname="tlsonly") == (None, None)
    servers = {s["database"]: s for s in b.admin("SHOW SERVERS")}
    assert servers["plainsrv"]["tls"] == "", servers["plainsrv"]
    assert TLS_COLUMN.match(servers["tlsonly"]["tls"]), servers["tlsonly"]
    assert b.log_contains("plaintext login refused \\(sslmode allow\\); retrying with TLS") == 1


def test_server_client_certificate(tls_factory, tlspg, certs):
    """server_tls_cert_file / server_tls_key_file: pgtenant presents
    CN=certuser and logs in to the `cert` hba line as certuser."""
    b = tls_factory(settings={"server_tls_cert_file": certs.certuser.cert,
                              "server_tls_key_file": certs.certuser.key},
                    databases={"certdb": db_entry(tlspg.port, user="certuser")})
    with b.connect(dbname="certdb", sslmode="require") as conn:
        assert conn.execute("select current_user").fetchone()[0] == "certuser"
        assert tlspg.ssl_backends("certuser") == [(True, "/CN=certuser")]
    with b.connect(sslmode="require") as conn:  # the scram-sha-256 entries are unaffected
        assert conn.execute("select current_user").fetchone()[0] == "app"


# ---------------------------------------------------------------- RELOAD

def test_reload_new_certificate(tls_factory, certs):
    """RELOAD with another certificate: new handshakes present it, an open
    TLS session keeps working.  A RELOAD naming a missing file or a key that
    does not match keeps the previous certificate and says so in the log."""
    b = tls_factory()
    kept = b.connect(sslmode="require")
    try:
        assert kept.execute("select 1").fetchone()[0] == 1
        assert peer_der(b) == certs.server.der()
        b.settings.update(client_tls_cert_file=certs.server2.cert, client_tls_key_file=certs.server2.key)
        reload_and_wait(b, "configuration reloaded")
        assert wait_for(lambda: peer_der(b) == certs.server2.der()), "new handshakes still get the old certificate"
        assert kept.execute("select 2").fetchone()[0] == 2
        with b.connect(sslmode="verify-full", sslrootcert=certs.ca.cert, host="acme.db.example.com",
                       hostaddr="127.0.0.1") as conn:
            assert conn.execute("select 3").fetchone()[0] == 3
        broken = os.path.join(b.dir, "broken.crt")
        with open(broken, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        for cert, key in ((os.path.join(b.dir, "missing.crt"), certs.server2.key),
                          (certs.server.cert, certs.server2.key),
                          (broken, certs.server2.key)):
            b.settings.update(client_tls_cert_file=cert, client_tls_key_file=key)
            reload_and_wait(b, "keeping the previous TLS settings")
            assert peer_der(b) == certs.server2.der(), (cert, key)
            with b.connect(sslmode="verify-ca", sslrootcert=certs.ca.cert) as conn:
                assert conn.execute("select 4").fetchone()[0] == 4
            assert kept.execute("select 5").fetchone()[0] == 5
    finally:
        kept.close()


# ---------------------------------------------------------------- hostile handshakes

def framed_hello(total=10 << 20):
    """A 10 MB "ClientHello": well-framed TLS records (type 22, at most 16 kB
    each) carrying a handshake message that claims to be 10 MB long."""
    body = os.urandom(total)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    out = bytearray()
    for i in range(0, len(hs), 16384):
        chunk = hs[i:i + 16384]
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
    return bytes(out)


def test_hostile_handshakes(tls_factory):
    """Garbage where the ClientHello should be, clients stopping halfway
    through their ClientHello, 10 MB ClientHellos (after an SSLRequest and
    as direct TLS): each is closed (the stalled ones by client_login_timeout),
    pgtenant lives on, and a TLS client running queries all along and a new
    TLS login meanwhile are unaffected."""
    b = tls_factory(settings={"client_login_timeout": "2"})
    stop, done, errs = threading.Event(), [], []

    def steady():
        try:
            with b.connect(sslmode="require") as conn:
                while not stop.is_set():
                    assert conn.execute("select 1").fetchone()[0] == 1
                    done.append(1)
                    time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - report any failure
            errs.append(repr(e))

    th = threading.Thread(target=steady)
    th.start()
    try:
        assert wait_for(lambda: done or errs)
        # garbage after the 'S'
        for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 100, b"\x16\x03\x01\x00\x05hello" * 20):
            s, answer = ssl_request(b.port)
            assert answer == b"S"
            s.sendall(garbage)
            took = closed_within(s, 5)
            s.close()
            assert took is not None and took < 1.5, (garbage[:10], took)
        # stalled halfway through the ClientHello: via SSLRequest and direct
        hello = client_hello()
        direct_hello = client_hello(alpn=["postgresql"])
        stalled, t0 = [], time.time()
        for i in range(20):
            if i % 2:
                s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
                s.sendall(direct_hello[:len(direct_hello) // 2])
            else:
                s, answer = ssl_request(b.port)
                assert answer == b"S"
                s.sendall(hello[:len(hello) // 2])
            stalled.append(s)
        t1 = time.time()
        with b.connect(sslmode="require") as conn:  # handshakes do not block one another
            assert conn.execute("select 1").fetchone()[0] == 1
        assert time.time() - t1 < 1.5
        for s in stalled:
            took = closed_within(s, 8 - (time.time() - t0))
            s.close()
            assert took is not None, "a stalled handshake outlived client_login_timeout"
        assert 1.5 < time.time() - t0 < 8
        # 10 MB ClientHellos, sent while reading
        for kind, direct in (("framed", False), ("framed", True), ("random", True)):
            data = framed_hello() if kind == "framed" else b"\x16\x03\x01" + os.urandom(10 << 20)
            if direct:
                s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
            else:
                s, answer = ssl_request(b.port)
                assert answer == b"S"

            def send(s=s, data=data):
                try:
                    s.sendall(data)
                except OSError:
                    pass
            sender = threading.Thread(target=send)
            sender.start()
            took = closed_within(s, 10)
            s.close()
            sender.join(10)
            assert took is not None, (kind, direct)
        with b.connect(sslmode="require") as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
    finally:
        stop.set()
        th.join(10)
    assert not errs and len(done) > 10, (errs, len(done))


# ---------------------------------------------------------------- volume

def test_half_a_record_does_not_spin(tls_factory):
    """OpenSSL reads ahead, and what it holds is invisible to epoll; but a
    partial record in its buffer can only be completed by the socket.  A
    client that sends half a record (during login and while logged in) and
    then nothing must cost pgtenant no CPU while it waits, and nobody else
    notices; the half record is dropped with the client at the login
    timeout."""
    b = tls_factory(settings={"client_login_timeout": "3"})
    half = b"\x17\x03\x03\x00\x40" + b"\x00" * 10  # application data record of 64 bytes, 10 sent
    stalled = []
    for _ in range(3):
        s = tls_connect(b.port)
        raw = socket.socket(fileno=os.dup(s.fileno()))  # the TCP socket under the TLS session
        raw.sendall(half)
        stalled.append((s, raw))
    logged_in = tls_connect(b.port)
    raw_login(logged_in)
    raw = socket.socket(fileno=os.dup(logged_in.fileno()))
    # a whole record (a query) and half of the next in one segment: OpenSSL
    # reads both ahead, returns the query, and keeps the half
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    logged_in.sendall(b"Q" + struct.pack("!I", 13) + b"select 1\0")
    raw.sendall(half)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    logged_in.settimeout(5)
    assert logged_in.recv(1) == b"T", "the query before the half record is answered"
    stalled.append((logged_in, raw))
    time.sleep(0.3)
    cpu0, t0 = b.cpu_seconds(), time.time()
    time.sleep(1.5)
    used = b.cpu_seconds() - cpu0
    assert used < 0.3 * (time.time() - t0), "pgtenant used %.2f s of CPU while clients held half records" % used
    with b.connect(sslmode="require") as conn:
        assert conn.execute("select 42").fetchone()[0] == 42
    for s, r in stalled[:3]:
        assert closed_within(s, 5) is not None, "a half record during login is closed by client_login_timeout"
    for s, r in stalled:
        r.close()
        s.close()


def test_copy_200mb_over_tls_both_sides(tls_factory, tlspg, certs):
    """COPY FROM STDIN of 200 MB and COPY TO STDOUT of it again, with
    verify-full from the client to pgtenant and from pgtenant to PostgreSQL:
    every row arrives, and comes back, intact."""
    with tlspg.connect("appdb", "app") as conn:
        conn.execute("drop table if exists tls_big")
        conn.execute("create unlogged table tls_big(t text)")
    b = tls_factory()
    payload = os.urandom(600_000).hex().encode()  # 1.2 MB of [0-9a-f]
    rows_per_block, blocks = 1000, 200
    sent_rows = sent_bytes = sent_sum = 0
    t0 = time.time()
    try:
        with b.connect(sslmode="verify-full", sslrootcert=certs.ca.cert, host="localhost",
                       hostaddr="127.0.0.1") as conn:
            with conn.cursor() as cur:
                with cur.copy("COPY tls_big (t) FROM STDIN") as copy:
                    for blk in range(blocks):
                        lines = []
                        for i in range(rows_per_block):
                            n = blk * rows_per_block + i
                            off = (n * 7919) % 200_000
                            line = b"%09d:" % n + payload[off:off + 989]
                            sent_sum += zlib.crc32(line)
                            lines.append(line)
                        block = b"\n".join(lines) + b"\n"
                        sent_rows += len(lines)
                        sent_bytes += len(block)
                        copy.write(block)
                assert sent_bytes >= 200_000_000
                assert cur.execute("select count(*) from tls_big").fetchone()[0] == sent_rows
                got_rows = got_bytes = got_sum = 0
                rest = b""
                with cur.copy("COPY tls_big TO STDOUT") as copy:
                    for data in copy:
                        data = rest + bytes(data)
                        got_bytes += len(data) - len(rest)
                        lines = data.split(b"\n")
                        rest = lines.pop()
                        got_rows += len(lines)
                        for line in lines:
                            got_sum += zlib.crc32(line)
                assert rest == b""
                assert (got_rows, got_bytes, got_sum) == (sent_rows, sent_bytes, sent_sum)
            servers = [s for s in b.admin("SHOW SERVERS") if s["database"] == "appdb"]
            assert servers and all(TLS_COLUMN.match(s["tls"]) for s in servers), servers
        print("200 MB each way over TLS in %.1f s" % (time.time() - t0))
    finally:
        tlspg.sql("drop table if exists tls_big", dbname="appdb")


def test_pgbench_over_tls_both_sides(tls_factory, tlspg):
    """pgbench -S -c 64 -j 2 with TLS from pgbench to pgtenant and from
    pgtenant to PostgreSQL (verify-full): no failed transaction, no error."""
    pgbench = os.path.join(PG_BIN, "pgbench")
    subprocess.run([pgbench, "-i", "-q", "-s", "1", "-h", tlspg.sockdir, "-p", str(tlspg.port), "-U", "app",
                    "appdb"], check=True, capture_output=True, timeout=120)
    b = tls_factory(settings={"default_pool_size": "8"})
    env = dict(os.environ, PGSSLMODE="require", PGPASSWORD=APP_PASSWORD)
    proc = subprocess.Popen([pgbench, "-n", "-S", "-c", "64", "-j", "2", "-T", "5", "-h", "127.0.0.1",
                             "-p", str(b.port), "-U", "app", "appdb"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # while it runs: 64 clients, every one of them on TLS
        assert wait_for(lambda: len([c for c in b.admin("SHOW CLIENTS") if c["database"] == "appdb"]) == 64,
                        timeout=4)
        clients_tls = [c["tls"] for c in b.admin("SHOW CLIENTS") if c["database"] == "appdb"]
        assert len(clients_tls) == 64 and all(TLS_COLUMN.match(t) for t in clients_tls), clients_tls[:3]
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = stdout + stderr
    assert proc.returncode == 0, out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed is None or int(failed.group(1)) == 0, out
    assert "error" not in stderr.lower(), out
    servers = [s for s in b.admin("SHOW SERVERS") if s["database"] == "appdb"]
    assert servers and all(TLS_COLUMN.match(s["tls"]) for s in servers), servers


# ---------------------------------------------------------------- metrics

def test_tls_metrics(tls_factory, certs):
    """pgtenant_tls_handshakes_total and pgtenant_tls_handshake_failures_total,
    side="client" and side="server", grow with what happened."""
    port = free_port()
    fake = FakeServer(b"S", after=b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        b = tls_factory(settings={"metrics_listen": "127.0.0.1:%d" % port, "client_tls_sslmode": "prefer"},
                        databases={"fakedb": db_entry(fake.port)})
        b.metrics_port = port
        hs, fails = "pgtenant_tls_handshakes_total", "pgtenant_tls_handshake_failures_total"
        before = parse(scrape(b))
        for _ in range(3):
            with b.connect(sslmode="require") as conn:
                conn.execute("select 1")
        with b.connect(sslmode="disable") as conn:  # plaintext: no handshake
            conn.execute("select 1")
        mid = parse(scrape(b))
        assert tls_metric(mid, hs, "client") == tls_metric(before, hs, "client") + 3
        assert tls_metric(mid, hs, "server") >= tls_metric(before, hs, "server") + 1
        assert tls_metric(mid, fails, "client") == tls_metric(before, fails, "client")
        s, answer = ssl_request(b.port)
        assert answer == b"S"
        s.sendall(b"this is no ClientHello" * 10)
        assert closed_within(s, 5) is not None
        s.close()
        after = parse(scrape(b))
        assert tls_metric(after, fails, "client") == tls_metric(mid, fails, "client") + 1
        assert tls_metric(after, hs, "client") == tls_metric(mid, hs, "client")
        code, msg = login_error(b, dbname="fakedb")
        assert code == "08006", (code, msg)
        last = parse(scrape(b))
        assert tls_metric(last, fails, "server") >= tls_metric(after, fails, "server") + 1
        for name in (hs, fails):
            for side in ("client", "server"):
                assert (name, (("side", side),)) in last, (name, side)
        # a plaintext login refused because TLS is required counts as a refusal for "tls"
        refused = ("pgtenant_refusals_total", (("reason", "tls"),))
        b.reload(client_tls_sslmode="require")
        with pytest.raises(psycopg.OperationalError, match="TLS required"):
            b.connect(sslmode="disable")
        assert parse(scrape(b)).get(refused, 0) == last.get(refused, 0) + 1
    finally:
        fake.close()
