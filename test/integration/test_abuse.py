"""A pooler a hostile client can neither starve nor freeze: abandoned
queries keep their slot until their backend is done and are cancelled; a
console client that does not read stops being served, not the loop; running
out of file descriptors pauses accepting instead of spinning; silent sockets
cannot lock out clients that log in; a new tenant gets a connection slot
held idle by another; console membership is told only after authentication."""
import resource
import socket
import struct
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import login_error


@pytest.fixture(scope="module")
def tenant_roles(pg):
    """Schemas for two tenants, and a server role per tenant (tenant_acme may
    read only tenant_acme's schema) that logs in with a SCRAM password."""
    with pg.connect("appdb", "postgres") as conn:
        for t in ("acme", "globex"):
            conn.execute("drop schema if exists tenant_%s cascade" % t)
            conn.execute("create schema tenant_%s authorization app" % t)
            conn.execute("create table tenant_%s.items(id int, owner text)" % t)
            conn.execute("alter table tenant_%s.items owner to app" % t)
            conn.execute("insert into tenant_%s.items select g, '%s' from generate_series(1, 3) g" % (t, t))
            conn.execute("drop role if exists tenant_%s" % t)
            conn.execute("create role tenant_%s login password '%spw'" % (t, t))
            conn.execute("grant usage on schema tenant_%s to tenant_%s" % (t, t))
            conn.execute("grant select on tenant_%s.items to tenant_%s" % (t, t))
    hba = pg.data + "/pg_hba.conf"
    with open(hba) as f:
        text = f.read()
    if "tenant_acme" not in text:
        text = text.replace("host all all 127.0.0.1/32 trust",
                            "host all tenant_acme,tenant_globex 127.0.0.1/32 scram-sha-256\n"
                            "host all all 127.0.0.1/32 trust")
        with open(hba, "w") as f:
            f.write(text)
        pg.sql("select pg_reload_conf()")
    yield
    pg.sql("alter role tenant_acme connection limit -1")


def role_bouncer(factory, settings=None, tenants=None):
    s = {"tenant_required": "yes", "tenant_server_user": "tenant_%s", "tenant_pool_size": "3",
         "query_wait_timeout": "60"}
    s.update(settings or {})
    t = {"acme": "pool_size=3", "globex": "pool_size=3"}
    t.update(tenants or {})
    b = factory(settings=s, tenants=t, start=False)
    b.users.update({"tenant_acme": "acmepw", "tenant_globex": "globexpw"})
    b.write_config()
    b.start()
    return b


def backends(pg, role):
    return pg.sql("select count(*) from pg_stat_activity where usename = '%s' "
                  "and backend_type = 'client backend'" % role)[0][0]


def test_per_tenant_server_roles_are_the_privilege_boundary(bouncer_factory, pg, tenant_roles):
    b = role_bouncer(bouncer_factory, settings={"tenant_server_user": "tenant_%s"},
                     tenants={"globex": "pool_size=2 server_user=tenant_globex"})
    with b.connect(options="-c tenant=acme") as conn:
        assert conn.execute("select current_user").fetchone()[0] == "tenant_acme"
        assert {r[0] for r in conn.execute("select owner from items")} == {"acme"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from tenant_globex.items")
        # the connection stays usable after the refusal
        assert conn.execute("select count(*) from items").fetchone()[0] == 3
    with b.connect(options="-c tenant=globex") as conn:
        assert conn.execute("select current_user").fetchone()[0] == "tenant_globex"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from tenant_acme.items")
    pools = {p["tenant"]: p for p in b.admin("SHOW POOLS") if p["database"] == "appdb"}
    assert pools["acme"]["user"].startswith("tenant_acme")


def test_role_connection_limit_is_a_cluster_wide_cap(bouncer_factory, pg, tenant_roles):
    """Two pgtenant instances, CONNECTION LIMIT 2 on acme's role, each
    instance allowing acme 3 connections: together they never hold more than
    2 acme backends, and acme clients wait instead of failing."""
    pg.sql("alter role tenant_acme connection limit 2")
    settings = {"server_idle_timeout": "0.3", "server_login_retry": "1"}
    b1 = role_bouncer(bouncer_factory, settings)
    b2 = role_bouncer(bouncer_factory, settings)
    errors, peak = [], [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], backends(pg, "tenant_acme"))
            time.sleep(0.02)

    def client(b):
        try:
            with b.connect(options="-c tenant=acme") as conn:
                for _ in range(3):
                    conn.execute("select pg_sleep(0.2)")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=client, args=(b,)) for b in (b1, b2) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sampler.join()
    assert errors == []
    assert 1 <= peak[0] <= 2, peak[0]
    assert b1.log_contains("too many connections for role") + b2.log_contains("too many connections for role") >= 1


def test_abandoned_queries_keep_their_slot_and_are_cancelled(bouncer_factory, pg, tenant_roles):
    """40 clients start pg_sleep(12) and vanish: acme never holds more
    backends than its pool_size, the running queries are cancelled, and a
    globex client logs in and runs normally throughout."""
    b = role_bouncer(bouncer_factory)
    socks = []
    for _ in range(40):
        s, _ = pgwire.login(b, extra={"options": "-c tenant=acme"})
        s.sendall(pgwire.msg(b"Q", b"select pg_sleep(12)\0"))
        socks.append(s)
    deadline = time.time() + 5
    while time.time() < deadline and pg.sql("select count(*) from pg_stat_activity where usename = 'tenant_acme' "
                                            "and query = 'select pg_sleep(12)' and state = 'active'")[0][0] < 3:
        time.sleep(0.05)
    for s in socks:  # vanish without a Terminate
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    peak, latencies = 0, []
    t_end = time.time() + 3
    with b.connect(options="-c tenant=globex") as other:
        while time.time() < t_end:
            peak = max(peak, backends(pg, "tenant_acme"))
            t0 = time.time()
            assert other.execute("select count(*) from items").fetchone()[0] == 3
            latencies.append(time.time() - t0)
            time.sleep(0.05)
    assert peak <= 3, peak
    assert max(latencies) < 1.0, max(latencies)
    running = pg.sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(12)' and state = 'active'")
    assert running[0][0] == 0, "the abandoned queries must have been cancelled"
    assert b.log_contains("query cancelled") >= 1
    # the pool is healthy afterwards
    with b.connect(options="-c tenant=acme") as conn:
        assert conn.execute("select count(*) from items").fetchone()[0] == 3


def test_abandoned_copy_and_unsynced_pipeline(bouncer_factory, pg):
    """A client vanishing in the middle of COPY FROM STDIN, or after
    extended-protocol messages without their Sync: the server connection
    is brought back to idle (CopyFail, Sync) and reused, nothing leaks."""
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect() as conn:
        conn.execute("create table if not exists abandoned_copy(x int)")
        conn.execute("truncate abandoned_copy")
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    s, _ = pgwire.login(b)
    s.sendall(pgwire.msg(b"Q", b"copy abandoned_copy from stdin\0"))
    t, _ = pgwire.recv_msg(s)
    assert t == b"G"
    s.sendall(pgwire.msg(b"d", b"1\n2\n"))
    s.close()
    s, _ = pgwire.login(b)
    s.sendall(pgwire.msg(b"P", b"\0select pg_sleep(0.2)\0\0\0") + pgwire.msg(b"B", b"\0\0\0\0\0\0\0\0") +
              pgwire.msg(b"E", b"\0\0\0\0\0") + pgwire.msg(b"H", b""))
    time.sleep(0.05)
    s.close()
    time.sleep(0.5)
    with b.connect() as conn:
        assert conn.execute("select count(*) from abandoned_copy").fetchone()[0] == 0
        assert conn.execute("select now() = statement_timestamp()").fetchone()[0] is True
        # reused or replaced: either way a single backend at most
        assert pg.backends() <= 2
    assert pid  # (the first client's backend id, for the log)


def test_console_client_that_does_not_read_cannot_freeze_the_proxy(bouncer_factory):
    b = bouncer_factory()
    rss0 = b.rss_kb()
    s, _ = pgwire.login(b, user="monitor", dbname="pgtenant")
    s.settimeout(30)
    batch = pgwire.msg(b"Q", b"SHOW CONFIG\0") * 1000
    stop = threading.Event()

    def flood():
        try:
            for _ in range(20):
                if stop.is_set():
                    return
                s.sendall(batch)
        except OSError:
            pass

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    time.sleep(1.0)
    with b.connect() as conn:
        worst = 0.0
        for _ in range(30):
            t0 = time.monotonic()
            conn.execute("select 1")
            worst = max(worst, time.monotonic() - t0)
    stop.set()
    rss1 = b.rss_kb()
    s.close()
    flooder.join(5)
    assert worst < 0.05, worst
    assert rss1 - rss0 < 30 * 1024, (rss0, rss1)


def test_out_of_file_descriptors_pauses_accepting(bouncer_factory):
    b = bouncer_factory(start=False)
    b.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)))
    socks = []
    for _ in range(80):
        try:
            socks.append(socket.create_connection(("127.0.0.1", b.port), timeout=2))
        except OSError:
            break
    time.sleep(0.5)
    cpu0 = b.cpu_seconds()
    time.sleep(2.0)
    cpu = b.cpu_seconds() - cpu0
    lines = b.log_contains("not accepting connections")
    assert 1 <= lines <= 6, lines
    assert cpu < 0.3, cpu
    for s in socks:
        s.close()
    deadline = time.time() + 10
    while True:
        try:
            with b.connect() as conn:
                assert conn.execute("select 1").fetchone()[0] == 1
            break
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_silent_sockets_do_not_lock_out_real_clients(bouncer_factory):
    """300 connections that never log in (some send half a startup packet)
    against max_client_conn 100: a client that really logs in gets in."""
    b = bouncer_factory(settings={"max_client_conn": "100", "client_login_timeout": "60"})
    socks = []
    for i in range(300):
        try:
            s = socket.create_connection(("127.0.0.1", b.port), timeout=2)
        except OSError:
            continue
        if i % 2:
            s.sendall(struct.pack("!I", 60))  # a length word, then nothing
        socks.append(s)
    time.sleep(1.2)  # silent long enough to be the first to go
    t0 = time.monotonic()
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    assert time.monotonic() - t0 < 5
    with b.connect() as conn:  # and another, while they are still there
        assert conn.execute("select 1").fetchone()[0] == 1
    assert b.log_contains("too many connections waiting to log in") + b.log_contains("login too slow") > 0
    for s in socks:
        s.close()


def test_idle_connection_of_another_tenant_makes_room(bouncer_factory, pg):
    """max_db_connections = 3, three tenants that each ran one query and left
    (an idle server each), then a fourth tenant: it gets a server at once."""
    tenants = {t: "pool_size=2" for t in ("t1", "t2", "t3", "t4")}
    b = bouncer_factory(settings={"tenant_required": "yes", "max_db_connections": "3", "query_wait_timeout": "20"},
                        tenants=tenants)
    for t in ("t1", "t2", "t3"):
        with b.connect(options="-c tenant=%s" % t) as conn:
            conn.execute("select 1")
    assert sum(p["sv_idle"] for p in b.admin("SHOW POOLS") if p["database"] == "appdb") == 3
    t0 = time.monotonic()
    with b.connect(options="-c tenant=t4") as conn:
        conn.execute("select 1")
    assert time.monotonic() - t0 < 1.0
    assert b.log_contains("making room for another pool") == 1


def test_console_membership_is_told_only_after_authentication(bouncer):
    # a wrong password: the same answer whether or not the user may use the console
    assert login_error(bouncer, "app", "pgtenant", password="wrong")[0] == "28P01"
    assert login_error(bouncer, "admin", "pgtenant", password="wrong")[0] == "28P01"
    assert login_error(bouncer, "nosuchuser", "pgtenant", password="wrong")[0] == "28P01"
    # the right password for a user that is not allowed: now it may know
    assert login_error(bouncer, "app", "pgtenant")[0] == "28000"
