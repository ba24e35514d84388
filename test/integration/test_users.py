"""The [users] section (PgBouncer's): per-user pool_mode, pool_size,
reserve_pool_size, max_user_connections, max_user_client_connections and
auth_type; their precedence against [tenants] and [databases]; config errors
with their lines; RELOAD; SHOW USERS; tenant isolation with a [users] entry
in play."""
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import PGTENANT_BIN, login_error
from pgwire import connect as raw_connect
from pgwire import recv_msg, startup_packet

# login users that are also server roles (no forced user= in the entries below)
ROLES = ["u_sess", "u_txn", "u_small", "u_big", "u_cap", "u_lim", "u_other", "u_trust", "u_md5", "u_r", "u_x"]
TENANTS = ["usr_acme", "usr_globex"]


@pytest.fixture(scope="module")
def roles(pg):
    for r in ROLES:
        pg.sql("DO $$BEGIN CREATE ROLE %s LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$" % r)
    with pg.connect("appdb") as conn:
        for t in TENANTS:
            conn.execute("drop schema if exists tenant_%s cascade" % t)
            conn.execute("create schema tenant_%s" % t)
            conn.execute("create table tenant_%s.items(owner text)" % t)
            conn.execute("insert into tenant_%s.items select '%s' from generate_series(1, 3)" % (t, t))
            conn.execute("grant usage on schema tenant_%s to public" % t)
            conn.execute("grant select on tenant_%s.items to public" % t)
    return ROLES


def users_bouncer(factory, pg, users, settings=None, tenants=None, databases=None):
    """A pgtenant whose ini has a [users] section (b.user_settings, written again
    by every b.reload()), two entries without a forced server user, and a
    password for each role in auth_file (except u_trust)."""
    dbs = {"anydb": "host=127.0.0.1 port=%d dbname=appdb" % pg.port,
           "anydb2": "host=127.0.0.1 port=%d dbname=appdb" % pg.port}
    dbs.update(databases or {})
    b = factory(settings=settings, databases=dbs, tenants=tenants, start=False,
                users={r: r + "pw" for r in ROLES if r != "u_trust"})
    b.user_settings = dict(users)
    plain = b.write_config

    def write_config():
        plain()
        with open(b.ini, "a", encoding="utf-8") as f:
            f.write("[users]\n")
            for k, v in b.user_settings.items():
                f.write("%s = %s\n" % (k, v))

    b.write_config = write_config
    b.write_config()
    b.start()
    return b


def pid(conn):
    return conn.execute("select pg_backend_pid()").fetchone()[0]


def pools(b):
    return {(p["database"], p["user"]): p for p in b.admin("SHOW POOLS")}


def show_users(b):
    return {u["name"]: u for u in b.admin("SHOW USERS")}


def run_sleepers(b, specs, seconds):
    """One client per (user, dbname, options) in specs, each running
    pg_sleep(seconds) at once; returns (threads, errors)."""
    errors = []

    def one(user, dbname, kw):
        try:
            with b.connect(user, dbname, **kw) as conn:
                conn.execute("select pg_sleep(%s)" % seconds)
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=s) for s in specs]
    for t in threads:
        t.start()
    return threads, errors


def peak(probe, threads, limit=30):
    """Highest probe() while any thread runs."""
    seen = 0
    deadline = time.time() + limit
    while any(t.is_alive() for t in threads) and time.time() < deadline:
        seen = max(seen, probe())
        time.sleep(0.03)
    for t in threads:
        t.join()
    return seen


def auth_request(b, user, dbname="anydb"):
    """The authentication a login is asked for: 0 (none: trust), 5 (md5) or
    10 (SASL), read from the first message pgtenant answers the startup with."""
    s = raw_connect(b)
    try:
        s.sendall(startup_packet({"user": user, "database": dbname}))
        t, body = recv_msg(s)
        assert t == b"R", (t, body)
        return struct.unpack("!I", body[:4])[0]
    finally:
        s.close()


def test_pool_mode_per_user(bouncer_factory, pg, roles):
    """A session-mode user keeps its backend across transactions and a second
    client of it gets another; a transaction-mode user on the same database
    entry shares one backend between its clients."""
    b = users_bouncer(bouncer_factory, pg, {"u_sess": "pool_mode=session pool_size=2"},
                      settings={"default_pool_size": "1"})
    a, c = b.connect("u_sess", "anydb"), b.connect("u_sess", "anydb")
    pa = pid(a)
    pc = pid(c)
    assert pa != pc  # session mode: each client holds its own server connection
    for _ in range(3):
        assert pid(a) == pa and pid(c) == pc
    x, y = b.connect("u_txn", "anydb"), b.connect("u_txn", "anydb")
    px = pid(x)
    assert pid(y) == px and pid(x) == px  # transaction mode, pool of 1: the same backend
    p = pools(b)
    assert p[("anydb", "u_sess")]["pool_mode"] == "session"
    assert p[("anydb", "u_txn")]["pool_mode"] == "transaction"
    for conn in (a, c, x, y):
        conn.close()


def test_pool_mode_precedence(bouncer_factory, pg, roles):
    """The user's pool_mode beats the database entry's; a [tenants] entry's
    beats the user's."""
    b = users_bouncer(bouncer_factory, pg,
                      {"u_txn": "pool_mode=transaction", "u_sess": "pool_mode=session"},
                      databases={"sessdb": "host=127.0.0.1 port=%d dbname=appdb pool_mode=session" % pg.port},
                      tenants={"usr_acme": "pool_mode=transaction", "usr_globex": ""})
    with b.connect("u_txn", "sessdb") as conn:
        conn.execute("select 1")
    with b.connect("u_other", "sessdb") as conn:
        conn.execute("select 1")
    with b.connect("u_sess", "anydb", options="-c tenant=usr_acme") as conn:
        conn.execute("select 1")
    with b.connect("u_sess", "anydb", options="-c tenant=usr_globex") as conn:
        conn.execute("select 1")
    p = pools(b)
    assert p[("sessdb", "u_txn")]["pool_mode"] == "transaction"  # user over database entry
    assert p[("sessdb", "u_other")]["pool_mode"] == "session"  # no entry: the database's
    assert p[("anydb", "u_sess.usr_acme")]["pool_mode"] == "transaction"  # tenant over user
    assert p[("anydb", "u_sess.usr_globex")]["pool_mode"] == "session"  # user over global


def test_pool_size_per_user(bouncer_factory, pg, roles):
    """pool_size=2 caps u_small's server connections while u_big, without an
    entry, gets default_pool_size; SHOW USERS shows the setting."""
    b = users_bouncer(bouncer_factory, pg, {"u_small": "pool_size=2 reserve_pool_size=0"},
                      settings={"default_pool_size": "4"})
    small = big = 0
    threads, errors = run_sleepers(b, [("u_small", "anydb", {})] * 5 + [("u_big", "anydb", {})] * 4, 0.8)
    deadline = time.time() + 30
    while any(t.is_alive() for t in threads) and time.time() < deadline:
        small = max(small, pg.backends("u_small"))
        big = max(big, pg.backends("u_big"))
        time.sleep(0.03)
    for t in threads:
        t.join()
    assert not errors, errors
    assert small == 2 and big == 4, (small, big)
    u = show_users(b)
    assert u["u_small"]["pool_size"] == 2 and u["u_small"]["reserve_pool_size"] == 0
    assert u["u_big"]["pool_size"] is None and u["u_big"]["pool_mode"] is None


def test_pool_size_precedence_with_tenants(bouncer_factory, pg, roles):
    """A [tenants] pool_size beats the user's; the user's beats tenant_pool_size."""
    b = users_bouncer(bouncer_factory, pg, {"u_small": "pool_size=1"},
                      settings={"tenant_pool_size": "5"},
                      tenants={"usr_acme": "pool_size=3", "usr_globex": ""})
    acme = globex = 0
    threads, errors = run_sleepers(b, [("u_small", "anydb", {"options": "-c tenant=usr_acme"})] * 4 +
                                   [("u_small", "anydb", {"options": "-c tenant=usr_globex"})] * 4, 0.8)
    deadline = time.time() + 30
    while any(t.is_alive() for t in threads) and time.time() < deadline:
        p = pools(b)
        for key, var in ((("anydb", "u_small.usr_acme"), "acme"), (("anydb", "u_small.usr_globex"), "globex")):
            if key in p:
                n = p[key]["sv_active"] + p[key]["sv_idle"] + p[key]["sv_used"] + p[key]["sv_login"]
                if var == "acme":
                    acme = max(acme, n)
                else:
                    globex = max(globex, n)
        time.sleep(0.03)
    for t in threads:
        t.join()
    assert not errors, errors
    assert acme == 3 and globex == 1, (acme, globex)


def test_max_user_connections_across_databases(bouncer_factory, pg, roles):
    """max_user_connections=2 over two database entries: six clients wait
    their turn and are all served; the user never has more than two server
    connections, and both entries get some."""
    b = users_bouncer(bouncer_factory, pg, {"u_cap": "max_user_connections=2"},
                      settings={"default_pool_size": "5"})
    per_db = {"anydb": 0, "anydb2": 0}
    start = time.time()
    threads, errors = run_sleepers(b, [("u_cap", "anydb", {})] * 3 + [("u_cap", "anydb2", {})] * 3, 0.5)
    total = 0
    reported = 0
    deadline = time.time() + 30
    while any(t.is_alive() for t in threads) and time.time() < deadline:
        total = max(total, pg.backends("u_cap"))
        p = pools(b)
        for db in per_db:
            q = p.get((db, "u_cap"))
            if q:
                per_db[db] = max(per_db[db], q["sv_active"])
        reported = max(reported, show_users(b)["u_cap"]["current_connections"])
        time.sleep(0.03)
    for t in threads:
        t.join()
    elapsed = time.time() - start
    assert not errors, errors
    assert total == 2, total
    assert reported == 2
    assert per_db["anydb"] >= 1 and per_db["anydb2"] >= 1, per_db
    assert elapsed >= 1.4, elapsed  # three rounds of 0.5 s: they waited
    u = show_users(b)["u_cap"]
    assert u["max_user_connections"] == 2 and u["current_connections"] <= 2
    # another user is not held back by u_cap's cap
    threads, errors = run_sleepers(b, [("u_other", "anydb", {})] * 4, 0.5)
    assert peak(lambda: pg.backends("u_other"), threads) == 4 and not errors


def test_max_user_client_connections(bouncer_factory, pg, roles):
    """The client beyond max_user_client_connections gets 53300 with
    PgBouncer's message, whichever database or tenant it asks for; other
    users still log in; a freed place is taken again; admin_users on the
    console are let in over their cap, stats_users are not."""
    b = users_bouncer(bouncer_factory, pg,
                      {"u_lim": "max_user_client_connections=2", "admin": "max_user_client_connections=1",
                       "monitor": "max_user_client_connections=1"},
                      tenants={"usr_acme": "", "usr_globex": ""})
    c1 = b.connect("u_lim", "anydb")
    c2 = b.connect("u_lim", "anydb2")
    code, msg = login_error(b, "u_lim", "anydb")
    assert (code, msg) == ("53300", "client connections exceeded (max_user_client_connections)")
    # the tenant suffix is not part of the user name that is counted
    code, msg = login_error(b, "u_lim.usr_acme", "anydb", password="u_limpw")
    assert code == "53300" and "max_user_client_connections" in msg
    with b.connect("u_other", "anydb") as other:
        assert other.execute("select current_user").fetchone()[0] == "u_other"
    u = show_users(b)["u_lim"]
    assert u["max_user_client_connections"] == 2 and u["current_client_connections"] == 2
    c1.close()
    deadline = time.time() + 5
    while show_users(b)["u_lim"]["current_client_connections"] != 1 and time.time() < deadline:
        time.sleep(0.05)
    with b.connect("u_lim", "anydb") as c3:
        assert c3.execute("select current_user").fetchone()[0] == "u_lim"
    c2.close()
    # the admin console
    with psycopg.connect(b.dsn("admin", "pgtenant"), autocommit=True):
        assert b.admin("SHOW USERS")  # a second admin_users client on the console
    with psycopg.connect(b.dsn("monitor", "pgtenant"), autocommit=True):
        code, msg = login_error(b, "monitor", "pgtenant")
        assert code == "53300" and "max_user_client_connections" in msg


def test_auth_type_per_user(bouncer_factory, pg, roles):
    """Global scram-sha-256: a user with auth_type=trust logs in without a
    password (and without an auth_file line), one with md5 is asked for md5,
    the others for SCRAM; the user's auth_type beats the database entry's."""
    b = users_bouncer(bouncer_factory, pg,
                      {"u_trust": "auth_type=trust", "u_md5": "auth_type=md5",
                       "u_other": "auth_type=scram-sha-256"},
                      databases={"trustdb": "host=127.0.0.1 port=%d dbname=appdb auth_type=trust" % pg.port})
    assert auth_request(b, "u_trust") == 0
    assert auth_request(b, "u_md5") == 5
    assert auth_request(b, "u_sess") == 10
    assert auth_request(b, "u_sess", "trustdb") == 0  # the entry's trust
    assert auth_request(b, "u_other", "trustdb") == 10  # the user's scram over the entry's trust
    with psycopg.connect(b.dsn("u_trust", "anydb", password=""), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "u_trust"
    with b.connect("u_md5", "anydb") as conn:  # libpq answers the md5 request
        assert conn.execute("select current_user").fetchone()[0] == "u_md5"
    assert login_error(b, "u_md5", "anydb", password="wrong")[0] == "28P01"
    assert login_error(b, "u_other", "trustdb", password="wrong")[0] == "28P01"
    assert login_error(b, "u_sess", "trustdb", password="wrong") == (None, None)


def test_jwt_for_one_user(bouncer_factory, pg, roles, tmp_path):
    """auth_type=jwt for one user while the others use SCRAM; the admin
    console asks for SCRAM even of a user whose entry says jwt."""
    from jwtkeys import hmac_token
    secret = b"a-secret-for-the-users-test-0123456789abcdef"
    (tmp_path / "hmac.secret").write_bytes(secret + b"\n")
    b = users_bouncer(bouncer_factory, pg, {"u_other": "auth_type=jwt", "admin": "auth_type=jwt"},
                      settings={"jwt_secret_file": str(tmp_path / "hmac.secret"), "jwt_algorithms": "HS256",
                                "jwt_allow_plaintext": "yes", "tenant_sources": "parameter, options, user",
                                "auth_failure_delay": "0"})
    assert auth_request(b, "u_other") == 3  # cleartext: the token
    assert auth_request(b, "u_sess") == 10
    assert auth_request(b, "admin", "pgtenant") == 10
    token = hmac_token(secret, {"sub": "u_other", "exp": int(time.time()) + 300})
    with psycopg.connect(b.dsn("u_other", "anydb", password=token), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "u_other"
    assert login_error(b, "u_other", "anydb", password="u_otherpw")[0] == "28P01"  # its password is no token
    assert b.admin("SHOW USERS")  # admin, with its password


def test_config_errors_with_lines(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\n"                                      # 1
                   "appdb = host=127.0.0.1\n"                           # 2
                   "[pgtenant]\n"                                       # 3
                   "auth_type = trust\n"                                # 4
                   "[users]\n"                                          # 5
                   "app = pool_mode=session pool_size=3\n"              # 6
                   "bob = pool_size=5 query_timeout=30\n"               # 7
                   "carol = max_user_connections=many\n"                # 8
                   "dave = pool_mode=statement\n"                       # 9
                   "app = pool_size=4\n"                                # 10
                   "erin = auth_type=md5\n")                            # 11
    r = subprocess.run([PGTENANT_BIN, "--check", str(ini)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    for line, what in [(7, 'user "bob": unknown user setting "query_timeout"'),
                       (8, 'user "carol": invalid max_user_connections "many"'),
                       (9, 'user "dave": invalid pool_mode "statement"'),
                       (10, 'user "app" defined twice (first at line 6)')]:
        assert "%s:%d: %s" % (ini, line, what) in r.stderr, r.stderr
    assert "4 error(s)" in r.stderr, r.stderr
    ini.write_text("[databases]\nappdb = host=127.0.0.1\n[pgtenant]\nauth_type = trust\n[users]\n"
                   "erin = auth_type=md5\n")
    r = subprocess.run([PGTENANT_BIN, "--check", str(ini)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and '%s:6: user "erin": auth_type md5 needs auth_file' % ini in r.stderr, r.stderr
    ini.write_text("[databases]\nappdb = host=127.0.0.1\n[pgtenant]\nauth_type = trust\n[users]\n"
                   "app = pool_mode = session  max_user_connections = 3 ; comment\n")
    r = subprocess.run([PGTENANT_BIN, "--check", str(ini)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_reload(bouncer_factory, pg, roles):
    """RELOAD changes a user's pool_size for the pools in use; a bad [users]
    line keeps the old config; a lowered max_user_client_connections closes
    nobody but refuses the next login."""
    b = users_bouncer(bouncer_factory, pg, {"u_r": "pool_size=1 max_user_client_connections=5"})
    threads, errors = run_sleepers(b, [("u_r", "anydb", {})] * 3, 0.6)
    assert peak(lambda: pg.backends("u_r"), threads) == 1 and not errors
    b.user_settings["u_r"] = "pool_size=3 max_user_client_connections=5"
    b.reload()
    assert show_users(b)["u_r"]["pool_size"] == 3
    threads, errors = run_sleepers(b, [("u_r", "anydb", {})] * 3, 0.6)
    assert peak(lambda: pg.backends("u_r"), threads) == 3 and not errors
    # a bad line: the reload fails, the old config stays
    b.user_settings["u_r"] = "pool_size=nope"
    b.write_config()
    with pytest.raises(psycopg.Error, match="reload failed"):
        b.admin("RELOAD")
    assert show_users(b)["u_r"]["pool_size"] == 3
    assert b.log_contains(r'pgtenant\.ini:\d+: user "u_r": invalid pool_size "nope"') >= 1
    # lowered client cap: the open clients stay
    conns = [b.connect("u_r", "anydb") for _ in range(3)]
    b.user_settings["u_r"] = "pool_size=3 max_user_client_connections=1"
    b.reload()
    for c in conns:
        assert c.execute("select 1").fetchone()[0] == 1
    code, msg = login_error(b, "u_r", "anydb")
    assert code == "53300" and "max_user_client_connections" in msg
    for c in conns:
        c.close()


def test_cross_tenant_isolation_with_user_settings(bouncer_factory, pg, roles):
    """Two tenants, concurrently, over pools of two connections and a user
    capped at three server connections in transaction mode: every client sees
    only its own tenant's rows, tenant setting and search_path, even next to
    clients that change theirs; the user's cap holds throughout."""
    b = users_bouncer(bouncer_factory, pg, {"u_x": "pool_mode=transaction pool_size=2 max_user_connections=3"},
                      settings={"pool_mode": "session", "tenant_required": "yes",
                                "tenant_setting": "app.tenant_id"},
                      tenants={"usr_acme": "", "usr_globex": ""})
    errors = []

    def worker(tenant, n):
        try:
            with b.connect("u_x", "anydb", options="-c tenant=%s" % tenant) as conn:
                for i in range(60):
                    owners = {r[0] for r in conn.execute("select owner from items")}
                    tid, path = conn.execute("select current_setting('app.tenant_id'), "
                                             "current_setting('search_path')").fetchone()
                    if n == 0 and i % 7 == 0:
                        # a noisy client: inside its own transaction only
                        with conn.transaction():
                            conn.execute("set local search_path = public")
                            conn.execute("select set_config('app.tenant_id', 'evil', true)")
                    if owners != {tenant} or tid != tenant or path != '"tenant_%s", public' % tenant:
                        errors.append((tenant, n, i, owners, tid, path))
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append((tenant, n, repr(e)))

    threads = [threading.Thread(target=worker, args=(t, n)) for t in TENANTS for n in range(4)]
    for t in threads:
        t.start()
    most = peak(lambda: pg.backends("u_x"), threads, limit=120)
    assert not errors, errors[:5]
    assert most == 3, most  # the tenants' pools would take four
    p = pools(b)
    assert p[("anydb", "u_x.usr_acme")]["pool_mode"] == "transaction"  # the user's over the global session
    assert show_users(b)["u_x"]["current_connections"] <= 3
