"""Logins, both pool modes, and real clients (psql, psycopg) through pgtenant."""
import os
import time
import subprocess

import psycopg
import pytest
from conftest import login_error


def psql(b, sql, user="app", dbname="appdb", password=None, extra_env=None):
    env = dict(os.environ, PGPASSWORD=password if password is not None else b.users[user])
    env.update(extra_env or {})
    return subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(b.port), "-U", user, dbname,
                           "-c", sql], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_psql_and_psycopg_in_both_modes(bouncer_factory, mode):
    b = bouncer_factory(settings={"pool_mode": mode})
    r = psql(b, "select current_user || ':' || current_database() || ':' || inet_server_port()")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "app:appdb:%d" % b.pg.port
    with b.connect() as conn:
        assert conn.execute("select 40 + 2").fetchone()[0] == 42
        conn.execute("create temp table t(x int)" if mode == "session" else "select 1")
        with conn.transaction():
            conn.execute("create table if not exists basic_%s(x int)" % mode)
            conn.execute("insert into basic_%s values (1), (2)" % mode)
        assert conn.execute("select count(*) from basic_%s" % mode).fetchone()[0] >= 2
    pools = b.admin("SHOW POOLS")
    assert [p["pool_mode"] for p in pools if p["database"] == "appdb"] == [mode]


def test_session_mode_keeps_one_backend(bouncer_factory):
    b = bouncer_factory(settings={"pool_mode": "session"})
    with b.connect() as conn:
        pids = {conn.execute("select pg_backend_pid()").fetchone()[0] for _ in range(20)}
        conn.execute("set work_mem = '3MB'")
        assert conn.execute("show work_mem").fetchone()[0] == "3MB"
    assert len(pids) == 1


def test_session_reset_between_clients(bouncer_factory):
    b = bouncer_factory(settings={"pool_mode": "session", "default_pool_size": "1"})
    with b.connect() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        conn.execute("set work_mem = '3MB'")
        conn.execute("create temp table leak(x int)")
    with b.connect() as conn:
        assert conn.execute("select pg_backend_pid()").fetchone()[0] == pid
        assert conn.execute("show work_mem").fetchone()[0] == "4MB"
        assert conn.execute("select count(*) from pg_class where relname = 'leak'").fetchone()[0] == 0


def test_scram_and_md5_logins(bouncer):
    with bouncer.connect("app") as conn:  # SCRAM on both sides
        assert conn.execute("select current_user").fetchone()[0] == "app"
    with bouncer.connect("md5user", "md5db") as conn:  # md5 stored for the client, md5 to the server
        assert conn.execute("select current_user").fetchone()[0] == "md5user"
    assert bouncer.log_contains("login failed") == 0


def test_md5_auth_type(bouncer_factory):
    b = bouncer_factory(settings={"auth_type": "md5"})
    with b.connect("app") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    with pytest.raises(psycopg.OperationalError):
        b.connect("app", password="nope")
    assert login_error(b, "app", password="nope")[0] == "28P01"


@pytest.mark.parametrize("user,password", [("app", "wrong"), ("nosuchuser", "x"), ("md5user", "wrong")])
def test_bad_password(bouncer, user, password):
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(bouncer.dsn(user, "appdb", password=password))
    assert "password authentication failed" in str(e.value)
    code, msg = login_error(bouncer, user, password=password)
    assert code == "28P01" and "password authentication failed" in msg


def test_psql_bad_password(bouncer):
    r = psql(bouncer, "select 1", password="wrong")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr


def test_trust_auth(bouncer_factory):
    b = bouncer_factory(settings={"auth_type": "trust"})
    with b.connect("trustuser", "unixdb", password="") as conn:
        assert conn.execute("select current_user").fetchone()[0] == "trustuser"


def test_unknown_database(bouncer):
    with pytest.raises(psycopg.OperationalError):
        bouncer.connect(dbname="nosuchdb")
    assert login_error(bouncer, dbname="nosuchdb")[0] == "3D000"


def test_fallback_database(bouncer_factory, pg):
    b = bouncer_factory(databases={"*": "host=127.0.0.1 port=%d" % pg.port})
    with b.connect("app", "postgres") as conn:
        assert conn.execute("select current_database()").fetchone()[0] == "postgres"


def test_backend_unreachable(bouncer):
    with pytest.raises(psycopg.OperationalError) as e:
        bouncer.connect("trustuser", "deaddb")
    assert "server connection failed" in str(e.value)
    code, msg = login_error(bouncer, "trustuser", "deaddb")
    assert code == "08006" and "server connection failed" in msg


def test_backend_login_failure_reported(bouncer_factory, pg):
    b = bouncer_factory(databases={"baddb": "host=127.0.0.1 port=%d dbname=appdb user=app password=wrong" % pg.port})
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect("app", "baddb")
    assert "password authentication failed" in str(e.value)
    time.sleep(1.1)  # past server_login_retry: a fresh attempt, same answer
    code, msg = login_error(b, "app", "baddb")
    assert code == "08006" and "server connection failed" in msg


def test_client_parameters_follow_the_client(bouncer_factory):
    """Pooled servers get each client's TimeZone/application_name/options, and lose them after."""
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect(options="-c work_mem=7MB", application_name="first") as c1:
        assert c1.execute("show work_mem").fetchone()[0] == "7MB"
        assert c1.execute("show application_name").fetchone()[0] == "first"
        c1.execute("set timezone = 'Asia/Tokyo'")
        with b.connect() as c2:  # same single server connection
            assert c2.execute("show work_mem").fetchone()[0] == "4MB"
            assert c2.execute("show timezone").fetchone()[0] != "Asia/Tokyo"
            assert c2.execute("show application_name").fetchone()[0] == ""
        assert c1.execute("show timezone").fetchone()[0] == "Asia/Tokyo"
        assert c1.execute("show work_mem").fetchone()[0] == "7MB"


def test_bad_startup_option_is_refused(bouncer):
    # PostgreSQL refuses such a login; pgtenant learns it when the parameter is
    # applied to a server connection, i.e. at the first query, and closes then
    conn = bouncer.connect(options="-c no_such_guc=1")
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("select 1")
    conn.close()
    # libpq reports a FATAL during a query as a lost connection, with the message
    assert 'could not apply session parameter: unrecognized configuration parameter "no_such_guc"' in str(e.value)
    assert bouncer.log_contains(r"no_such_guc.*\(42704\)") == 1
    with bouncer.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_admin_console(bouncer):
    assert bouncer.admin("SHOW VERSION") == [{"version": bouncer.admin("show version;")[0]["version"]}]
    assert bouncer.admin("SHOW VERSION")[0]["version"].startswith("pgtenant ")
    with bouncer.connect() as conn:
        conn.execute("select 1")
        pools = bouncer.admin("SHOW POOLS")
        cols = list(pools[0].keys())
        assert cols == ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
                        "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
                        "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us",
                        "pool_mode", "load_balance_hosts", "tenant"]
        row = [p for p in pools if p["database"] == "appdb"][0]
        assert row["cl_active"] == 1 and row["sv_idle"] == 1 and row["user"] == "app"
        clients = bouncer.admin("SHOW CLIENTS")
        assert list(clients[0].keys())[:6] == ["type", "user", "database", "replication", "state", "addr"]
        assert any(c["user"] == "app" and c["database"] == "appdb" for c in clients)
        servers = bouncer.admin("SHOW SERVERS")
        assert any(s["database"] == "appdb" and s["state"] == "idle" and int(s["port"]) == bouncer.pg.port
                   for s in servers)
    help_conn = psycopg.connect(bouncer.dsn("admin", "pgbouncer"), autocommit=True)  # alias
    notices = []
    help_conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    help_conn.execute("SHOW HELP")
    help_conn.close()
    assert any("SHOW" in n for n in notices)


def test_admin_console_refuses_others(bouncer):
    with pytest.raises(psycopg.OperationalError):
        bouncer.admin("SHOW POOLS", user="app")
    assert login_error(bouncer, "app", "pgtenant")[0] == "28000"
    # stats_users may SHOW but not control
    assert bouncer.admin("SHOW POOLS", user="monitor") is not None
    with pytest.raises(psycopg.Error) as e:
        bouncer.admin("RELOAD", user="monitor")
    assert e.value.sqlstate == "42501"
    with pytest.raises(psycopg.Error) as e:
        bouncer.admin("SHOW NOTHING")
    assert "SHOW HELP" in str(e.value)


def test_parameter_sets_alternating_on_one_server(bouncer_factory):
    """Clients with equal parameter sets share a server without re-SETs; one
    that changes its own set (SET of a reported parameter) must not drag the
    others along."""
    b = bouncer_factory(settings={"default_pool_size": "1"})
    c1 = b.connect(application_name="same", options="-c TimeZone=Asia/Tokyo")
    c2 = b.connect(application_name="same", options="-c TimeZone=Asia/Tokyo")
    c3 = b.connect()
    try:
        for i in range(10):
            assert c1.execute("show application_name").fetchone()[0] == ("same" if i < 5 else "changed")
            assert c2.execute("show application_name").fetchone()[0] == "same"
            assert c3.execute("show application_name").fetchone()[0] == ""
            assert c2.execute("show timezone").fetchone()[0] == "Asia/Tokyo"
            assert c3.execute("show timezone").fetchone()[0] != "Asia/Tokyo"
            if i == 4:
                c1.execute("set application_name = 'changed'")
        pids = {c.execute("select pg_backend_pid()").fetchone()[0] for c in (c1, c2, c3)}
        assert len(pids) == 1
    finally:
        for c in (c1, c2, c3):
            c.close()
