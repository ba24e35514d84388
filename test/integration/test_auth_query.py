"""auth_user / auth_query / auth_dbname (issue P8): users who are not in
auth_file are looked up through pgtenant's own server connection of
auth_user, asynchronously; the client is verified against the secret found,
and pgtenant logs in to the server with it: the md5 hash as is, and for a
SCRAM secret the ClientKey recovered from the client's own proof (SCRAM
pass-through).  No plain password of those roles is in any file.

The suite starts its own PostgreSQL here, whose pg_hba.conf demands SCRAM
from members of pt_scram and md5 from members of pt_md5 over TCP, so that
a server login that did not really pass the client's keys through fails.
The lookup goes through a SECURITY DEFINER function, the way that works on
Aurora, where no ordinary role may read pg_authid.
"""
import os
import re
import threading
import time

import psycopg
import pytest

from conftest import Bouncer, Postgres, free_port, login_error
from test_metrics import parse, scrape, value

AUTH_PASSWORD = "auth-user-secret"
LOOKUP = "SELECT uname, phash FROM pgtenant.user_lookup($1)"


@pytest.fixture(scope="module")
def apg():
    pg = Postgres()
    hba = os.path.join(pg.data, "pg_hba.conf")
    with open(hba) as f:
        rest = f.read()
    with open(hba, "w") as f:
        f.write("local all all trust\n"
                "host all pgt_auth 127.0.0.1/32 scram-sha-256\n"
                "host all +pt_scram 127.0.0.1/32 scram-sha-256\n"
                "host all +pt_md5 127.0.0.1/32 md5\n" + rest)
    pg.sql("SELECT pg_reload_conf()")
    pg.sql("CREATE ROLE pt_scram NOLOGIN; CREATE ROLE pt_md5 NOLOGIN")
    pg.sql("CREATE USER pgt_auth PASSWORD '%s'" % AUTH_PASSWORD)
    setup = """
        CREATE SCHEMA pgtenant;
        CREATE FUNCTION pgtenant.user_lookup(i_username text, OUT uname text, OUT phash text)
        RETURNS record AS $$
            SELECT rolname::text, rolpassword::text FROM pg_catalog.pg_authid
            WHERE rolname = i_username AND rolcanlogin
        $$ LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog;
        REVOKE ALL ON FUNCTION pgtenant.user_lookup(text) FROM public;
        GRANT USAGE ON SCHEMA pgtenant TO pgt_auth;
        GRANT EXECUTE ON FUNCTION pgtenant.user_lookup(text) TO pgt_auth;
        CREATE FUNCTION pgtenant.slow_lookup(i_username text, OUT uname text, OUT phash text)
        RETURNS record AS $$
            SELECT uname, phash FROM pgtenant.user_lookup(i_username), pg_sleep(2)
        $$ LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog;
        GRANT EXECUTE ON FUNCTION pgtenant.slow_lookup(text) TO pgt_auth;
        CREATE TABLE public.items(tenant text, v int);
        GRANT ALL ON public.items TO PUBLIC;
        CREATE SCHEMA tenant_t1; CREATE SCHEMA tenant_t2;
        GRANT ALL ON SCHEMA tenant_t1, tenant_t2 TO PUBLIC;
        CREATE TABLE tenant_t1.rows(who text); CREATE TABLE tenant_t2.rows(who text);
        GRANT ALL ON tenant_t1.rows, tenant_t2.rows TO PUBLIC;
        INSERT INTO tenant_t1.rows SELECT 't1' FROM generate_series(1, 5);
        INSERT INTO tenant_t2.rows SELECT 't2' FROM generate_series(1, 5);
    """
    pg.sql(setup, dbname="appdb")
    yield pg
    pg.stop()


@pytest.fixture
def make(apg, tmp_path):
    made = []

    def mk(settings=None, databases=None, **kw):
        d = tmp_path / ("b%d" % len(made))
        d.mkdir()
        s = {"auth_user": "pgt_auth", "auth_query": LOOKUP, "auth_dbname": "aqdb"}
        s.update(settings or {})
        dbs = {"aqdb": "host=127.0.0.1 port=%d dbname=appdb" % apg.port}
        dbs.update(databases or {})
        b = Bouncer(apg, str(d), settings=s, databases=dbs, users={"pgt_auth": AUTH_PASSWORD}, **kw)
        made.append(b)
        return b

    yield mk
    for b in made:
        b.stop()


def new_role(pg, name, password, kind="scram"):
    enc = "md5" if kind == "md5" else "scram-sha-256"
    pg.sql("DROP ROLE IF EXISTS %s" % name)
    pg.sql("SET password_encryption = '%s'; CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE pt_%s"
           % (enc, name, password, kind))


def connect(b, user, password, dbname="aqdb", **kw):
    return psycopg.connect(b.dsn(user, dbname, password=password, **kw), autocommit=True,
                           prepare_threshold=None)


def secret_of(pg, role):
    return pg.sql("SELECT rolpassword FROM pg_authid WHERE rolname = '%s'" % role)[0][0]


def files_text(b):
    text = ""
    for name in os.listdir(b.dir):
        with open(os.path.join(b.dir, name), errors="replace") as f:
            text += f.read()
    return text


@pytest.mark.parametrize("kind", ["scram", "md5"])
def test_role_created_after_start_logs_in_through_auth_query(make, apg, kind):
    b = make()
    role = "late_%s" % kind
    new_role(apg, role, "pw-" + role, kind)
    assert role not in open(os.path.join(b.dir, "userlist.txt")).read()
    with connect(b, role, "pw-" + role) as conn:
        who, addr = conn.execute("SELECT current_user, host(inet_client_addr())").fetchone()
        assert who == role
        # the server connection is pgtenant's own TCP login as the role, which
        # pg_hba.conf only lets in with a valid SCRAM proof / md5 response
        assert addr == "127.0.0.1"
        auth = apg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'" % role)[0][0]
        assert auth >= 1
    # neither the password nor the secret is in pgtenant's files or log
    text = files_text(b)
    assert "pw-" + role not in text
    assert secret_of(apg, role) not in text


@pytest.mark.parametrize("kind", ["scram", "md5"])
def test_wrong_password_and_unknown_user_are_refused(make, apg, kind):
    b = make()
    role = "wrong_%s" % kind
    new_role(apg, role, "right-pass", kind)
    state, msg = login_error(b, role, "aqdb", password="not-it")
    assert state == "28P01" and 'password authentication failed for user "%s"' % role in msg
    state, msg = login_error(b, "no_such_role", "aqdb", password="whatever")
    assert state == "28P01" and 'password authentication failed for user "no_such_role"' in msg
    # and the right one still works afterwards
    with connect(b, role, "right-pass") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == role


def test_scram_pass_through_serves_new_server_connections(make, apg):
    """Every server connection of the role is a SCRAM login made from the
    ClientKey of a client's proof: several at once, and again after the
    idle ones were closed."""
    b = make(settings={"default_pool_size": "3", "pool_mode": "transaction"})
    new_role(apg, "pt_many", "many-pass")
    conns = [connect(b, "pt_many", "many-pass") for _ in range(3)]
    for c in conns:
        c.execute("BEGIN")
        c.execute("SELECT pg_backend_pid()")
    backends = apg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pt_many'")[0][0]
    assert backends == 3
    for c in conns:
        c.execute("COMMIT")
    b.admin("RECONNECT aqdb")
    time.sleep(0.3)
    for c in conns:
        assert c.execute("SELECT current_user").fetchone()[0] == "pt_many"
        c.close()
    assert b.log_contains("server connection failed|login failed") == 0


def test_changed_password_is_looked_up_again(make, apg):
    b = make()
    new_role(apg, "pt_change", "old-pass")
    with connect(b, "pt_change", "old-pass") as conn:
        conn.execute("SELECT 1")
    apg.sql("ALTER ROLE pt_change PASSWORD 'new-pass'")
    # the cached secret is the old one: the first attempt with the new
    # password fails against it and drops it, the next one looks it up again
    ok = False
    for _ in range(2):
        try:
            with connect(b, "pt_change", "new-pass") as conn:
                ok = conn.execute("SELECT current_user").fetchone()[0] == "pt_change"
                break
        except psycopg.OperationalError as e:
            assert "password authentication failed" in str(e)
    assert ok
    state, _ = login_error(b, "pt_change", "aqdb", password="old-pass")
    assert state == "28P01"


def test_cache_spares_lookups(make, apg):
    port = free_port()
    b = make(settings={"auth_query_cache_ttl": "60", "metrics_listen": "127.0.0.1:%d" % port})
    b.metrics_port = port
    new_role(apg, "pt_cached", "cached-pass")
    for _ in range(4):
        with connect(b, "pt_cached", "cached-pass") as conn:
            conn.execute("SELECT 1")
    assert value(parse(scrape(b)), "pgtenant_auth_query_lookups_total") == 1
    # with no cache every login asks
    b2 = make(settings={"auth_query_cache_ttl": "0", "metrics_listen": "127.0.0.1:%d" % free_port()})
    b2.metrics_port = int(b2.settings["metrics_listen"].rsplit(":", 1)[1])
    for _ in range(3):
        with connect(b2, "pt_cached", "cached-pass") as conn:
            conn.execute("SELECT 1")
    assert value(parse(scrape(b2)), "pgtenant_auth_query_lookups_total") == 3


def test_slow_auth_query_blocks_nobody_else(make, apg):
    b = make(settings={"auth_query": "SELECT uname, phash FROM pgtenant.slow_lookup($1)"})
    new_role(apg, "pt_slow", "slow-pass")
    done = {}

    def slow_login():
        t0 = time.time()
        with connect(b, "pt_slow", "slow-pass") as conn:
            done["who"] = conn.execute("SELECT current_user").fetchone()[0]
        done["took"] = time.time() - t0

    t = threading.Thread(target=slow_login)
    t.start()
    time.sleep(0.3)
    # meanwhile a user of auth_file logs in and works at full speed
    t0 = time.time()
    for _ in range(5):
        with b.connect("app", "appdb") as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    fast = time.time() - t0
    # a RELOAD while the login waits: it carries on with the new configuration
    b.reload(client_idle_timeout="0")
    t.join(15)
    assert done.get("who") == "pt_slow"
    assert done["took"] >= 1.9
    assert fast < 1.5, fast


def test_lookup_failure_is_a_clear_error_for_that_login_only(make, apg):
    b = make(settings={"auth_query": "SELECT uname, phash FROM pgtenant.no_such_function($1)"})
    state, msg = login_error(b, "anyone", "aqdb", password="x")
    assert state == "08006" and "could not look up the user" in msg
    assert "no_such_function" not in msg
    assert b.log_contains(r"auth_query for user \"anyone\" failed: .*no_such_function") == 1
    with b.connect("app", "appdb") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_per_database_auth_user_and_dbname(make, apg):
    """auth_user / auth_query / auth_dbname in a [databases] entry override
    the global ones; an entry without them does no lookups."""
    b = make(settings={"auth_user": "", "auth_dbname": ""},
             databases={"withaq": "host=127.0.0.1 port=%d dbname=appdb auth_user=pgt_auth "
                                  "auth_query='%s'" % (apg.port, LOOKUP),
                        "noaq": "host=127.0.0.1 port=%d dbname=appdb" % apg.port})
    new_role(apg, "pt_perdb", "perdb-pass")
    with connect(b, "pt_perdb", "perdb-pass", dbname="withaq") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "pt_perdb"
    state, _ = login_error(b, "pt_perdb", "noaq", password="perdb-pass")
    assert state == "28P01"


def test_check_names_bad_auth_user(tmp_path):
    from conftest import PGTENANT_BIN
    import subprocess
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\nx = host=127.0.0.1 auth_user='a b'\n[pgtenant]\nauth_file = %s\n"
                   % (tmp_path / "u.txt"))
    (tmp_path / "u.txt").write_text("")
    r = subprocess.run([PGTENANT_BIN, "--check", str(ini)], capture_output=True, text=True)
    assert r.returncode != 0
    assert re.search(r"p\.ini:2: .*auth_user", r.stdout + r.stderr)


def test_two_tenants_through_auth_query_stay_apart(make, apg):
    """Two tenants, users looked up by auth_query, concurrent, tiny pools:
    every row each client reads is its own tenant's."""
    b = make(settings={"tenant_pool_size": "1", "tenant_sources": "options", "tenant_required": "yes",
                       "unknown_tenant": "allow", "tenant_search_path": '"$tenant"'})
    new_role(apg, "pt_ten", "ten-pass")
    apg.sql("GRANT USAGE ON SCHEMA tenant_t1, tenant_t2 TO pt_ten", dbname="appdb")
    foreign = []
    errors = []

    def worker(tenant):
        try:
            with connect(b, "pt_ten", "ten-pass", options="-c tenant=%s" % tenant) as conn:
                for _ in range(40):
                    for (who,) in conn.execute("SELECT who FROM rows").fetchall():
                        if who != tenant:
                            foreign.append(who)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("t1", "t2", "t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert foreign == []


def test_default_auth_query_with_a_superuser_auth_user(make, apg):
    """PgBouncer's default: pg_shadow read by a superuser auth_user (fine on
    a self-run server; on Aurora use the SECURITY DEFINER function above)."""
    b = make(settings={"auth_user": "postgres", "auth_query": "SELECT usename, passwd FROM pg_shadow "
                                                              "WHERE usename = $1"})
    assert b.settings["auth_query"].endswith("$1")
    new_role(apg, "pt_default", "default-pass")
    with connect(b, "pt_default", "default-pass") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "pt_default"
    state, _ = login_error(b, "pt_default", "aqdb", password="nope")
    assert state == "28P01"
