"""Shared pools (tenant_pool_mode = shared, issue 10): server connections
belong to the database entry and serve every tenant, each transaction gets
its tenant's pin on the connection it lands on, and a tenant's pool_size
caps how many it holds at once.  Dedicated tenants beside them keep their
own connections.  (P4's isolation probes also run on a shared pool of one
connection: test_isolation.py, mode "shared".)"""
import asyncio
import os
import threading
import time

import asyncpg
import psycopg
import pytest

NTENANTS = int(os.environ.get("PGT_TEST_NTENANTS", "2000"))


@pytest.fixture(scope="module")
def schemas(pg):
    with pg.connect("appdb", "app") as conn:
        # in batches: one transaction creating 2,000 tables runs out of locks
        for lo in range(0, NTENANTS, 250):
            conn.execute("""DO $$ BEGIN FOR i IN %d..%d LOOP
                              EXECUTE format('DROP SCHEMA IF EXISTS tenant_s%%s CASCADE', i);
                              EXECUTE format('CREATE SCHEMA tenant_s%%s', i);
                              EXECUTE format('CREATE TABLE tenant_s%%s.items(owner text)', i);
                              EXECUTE format('INSERT INTO tenant_s%%s.items VALUES (%%L)', i, 's' || i);
                            END LOOP; END $$""" % (lo, min(lo + 249, NTENANTS - 1)))
        for t in ("big", "heavy"):
            conn.execute("drop schema if exists tenant_%s cascade" % t)
            conn.execute("create schema tenant_%s" % t)
            conn.execute("create table tenant_%s.items(owner text)" % t)
            conn.execute("insert into tenant_%s.items values ('%s')" % (t, t))


def shared_bouncer(factory, settings=None, tenants=None, databases=None):
    s = {"tenant_required": "yes", "tenant_setting": "app.tenant_id", "unknown_tenant": "allow",
         "tenant_pool_mode": "shared", "default_pool_size": "10", "tenant_pool_size": "2",
         "max_client_conn": "5000", "tenant_max_client_conn": "50", "query_wait_timeout": "60"}
    s.update(settings or {})
    t = {"big": "tenant_pool_mode=dedicated pool_size=3"}
    t.update(tenants or {})
    return factory(settings=s, tenants=t, databases=databases)


class ServerWatch:
    """Polls SHOW SERVERS: peak connections per tenant and in all."""

    def __init__(self, b, interval=0.05):
        self.b, self.interval = b, interval
        self.peak_total = self.peak_shared = 0
        self.peak_by_tenant = {}
        self.samples = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        with psycopg.connect(self.b.dsn("admin", "pgtenant"), autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute("SHOW SERVERS", prepare=False).fetchall()
                cols = [d.name for d in conn.execute("SHOW SERVERS", prepare=False).description]
                rows = [dict(zip(cols, r)) for r in rows]
                self.peak_total = max(self.peak_total, len(rows))
                self.peak_shared = max(self.peak_shared, len([r for r in rows if r["tenant"] != "big"]))
                by = {}
                for r in rows:
                    if r["state"] == "active":
                        by[r["tenant"]] = by.get(r["tenant"], 0) + 1
                for k, v in by.items():
                    self.peak_by_tenant[k] = max(self.peak_by_tenant.get(k, 0), v)
                self.samples += 1
                time.sleep(self.interval)

    def done(self):
        self.stop.set()
        self.t.join()
        return self


def test_two_thousand_tenants_share_ten_connections(bouncer_factory, schemas, pg):
    """2,000 tenants through one shared pool of 10: every query sees only its
    tenant's schema and app.tenant_id, never more than 10 backends for them;
    a dedicated tenant beside them keeps its own pinned connections."""
    b = shared_bouncer(bouncer_factory)
    watch = ServerWatch(b)
    errors = []

    async def tenant(i, sem):
        tid = "s%d" % i
        async with sem:
            conn = await asyncpg.connect(host="127.0.0.1", port=b.port, user="app", database="appdb",
                                         password=b.users["app"], server_settings={"tenant": tid},
                                         statement_cache_size=0, ssl=False, timeout=60)
            try:
                # (text only: asyncpg's type introspection is slow on a catalog of 2,000 schemas)
                row = await conn.fetchrow("select string_agg(owner, ',') as o, current_setting('app.tenant_id') as t, "
                                          "array_to_string(current_schemas(false), ',') as s from items")
                if row["o"] != tid or row["t"] != tid or row["s"] != "tenant_%s,public" % tid:
                    errors.append((tid, dict(row)))
                async with conn.transaction():
                    await conn.execute("set local work_mem = '9MB'")
                    got = await conn.fetchval("select string_agg(owner, ',') from items")
                    if got != tid:
                        errors.append((tid, got))
            finally:
                await conn.close()

    def big_client(stop):
        with b.connect(options="-c tenant=big") as conn:
            while not stop.is_set():
                assert conn.execute("select owner from items").fetchall() == [("big",)]
                # pinned at login, as a dedicated pool's connections are
                assert conn.execute("show search_path").fetchone()[0] == '"tenant_big", public'

    async def main():
        sem = asyncio.Semaphore(100)
        await asyncio.gather(*(tenant(i, sem) for i in range(NTENANTS)))

    stop = threading.Event()
    bigs = [threading.Thread(target=big_client, args=(stop,)) for _ in range(3)]
    for t in bigs:
        t.start()
    asyncio.run(main())
    stop.set()
    for t in bigs:
        t.join()
    w = watch.done()
    assert not errors, errors[:5]
    assert w.samples > 10
    assert w.peak_shared <= 10, w.peak_shared
    assert w.peak_shared >= 5  # (it was used)
    assert w.peak_by_tenant.get("big", 0) <= 3
    assert w.peak_total <= 13
    # the shared connections rest in the reservoir, the dedicated ones in big's pool
    pools = {p["tenant"]: p for p in b.admin("SHOW POOLS")}
    assert pools["*shared*"]["sv_idle"] + pools["*shared*"]["sv_active"] <= 10
    backends = pg.sql("select count(*) from pg_stat_activity where usename = 'app' and datname = 'appdb' "
                      "and pid <> pg_backend_pid()", dbname="appdb")
    assert backends[0][0] <= 13, backends
    tenants = {r["id"] for r in b.admin("SHOW TENANTS")}
    assert {"s0", "s%d" % (NTENANTS - 1), "big"} <= tenants


def test_a_tenant_holds_at_most_its_pool_size(bouncer_factory, schemas):
    """heavy (pool_size 2) with 8 busy clients never holds more than 2 of the
    shared pool's 4 connections; the other tenants are served meanwhile."""
    b = shared_bouncer(bouncer_factory, settings={"default_pool_size": "4"}, tenants={"heavy": "pool_size=2"})
    watch = ServerWatch(b, interval=0.02)

    def heavy():
        with b.connect(options="-c tenant=heavy") as conn:
            for _ in range(4):
                assert conn.execute("select owner, pg_sleep(0.2) from items").fetchone()[0] == "heavy"

    threads = [threading.Thread(target=heavy) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    lat = []
    for i in range(10):
        with b.connect(options="-c tenant=s%d" % i) as conn:
            t0 = time.time()
            assert conn.execute("select owner from items").fetchone()[0] == "s%d" % i
            lat.append(time.time() - t0)
    for t in threads:
        t.join()
    w = watch.done()
    assert w.peak_by_tenant.get("heavy") == 2, w.peak_by_tenant
    assert w.peak_shared <= 4
    assert max(lat) < 0.15, lat  # never queued behind heavy's sleeps


def test_reset_inside_a_transaction_fails_closed_and_statements_stay_apart(bouncer_factory, schemas):
    """On a shared connection RESET returns to no tenant at all (no schema,
    empty tenant setting), not to another tenant's pin; the next transaction
    has its pin again.  Prepared statements of one tenant never answer for
    another on the same connection."""
    b = shared_bouncer(bouncer_factory, settings={"default_pool_size": "1"})
    with b.connect(options="-c tenant=s1") as conn:
        with conn.transaction():
            conn.execute("reset all")
            assert conn.execute("select current_setting('search_path'), "
                                "current_setting('app.tenant_id')").fetchone() == ("", "")
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("select owner from items")
        assert conn.execute("select owner from items").fetchone()[0] == "s1"
    # named statements (psycopg prepares at once with prepare_threshold=0)
    conns = {t: psycopg.connect(b.dsn(), autocommit=True, prepare_threshold=0, options="-c tenant=%s" % t)
             for t in ("s1", "s2", "s3")}
    try:
        pids = set()
        for _ in range(5):
            for t, c in conns.items():
                assert c.execute("select owner from items where owner is not null").fetchall() == [(t,)]
                with c.transaction():
                    assert c.execute("select owner from items where owner is not null").fetchall() == [(t,)]
                    pids.add(c.execute("select pg_backend_pid()").fetchone()[0])
        assert len(pids) == 1  # one connection served all three
    finally:
        for c in conns.values():
            c.close()


def test_reload_between_dedicated_and_shared(bouncer_factory, schemas):
    """A RELOAD moving tenants between dedicated and shared pools: the
    connections of the old kind close once released, clients keep working
    and see only their own rows."""
    b = shared_bouncer(bouncer_factory, settings={"tenant_pool_mode": "dedicated", "default_pool_size": "3"})
    conns = [b.connect(options="-c tenant=s%d" % i) for i in range(6)]
    try:
        def check():
            for i, c in enumerate(conns):
                assert c.execute("select owner, current_setting('app.tenant_id') from items").fetchone() == \
                    ("s%d" % i, "s%d" % i)

        check()
        assert len([s for s in b.admin("SHOW SERVERS") if s["tenant"].startswith("s")]) == 6
        b.reload(tenant_pool_mode="shared")
        for _ in range(3):
            check()
        servers = b.admin("SHOW SERVERS")
        assert len([s for s in servers if s["tenant"] != "big"]) <= 3, servers
        b.reload(tenant_pool_mode="dedicated")
        for _ in range(3):
            check()
        deadline = time.time() + 5  # (the reservoir's idle ones close at the janitor's next round)
        while time.time() < deadline and [s for s in b.admin("SHOW SERVERS") if s["tenant"] == "*shared*"]:
            time.sleep(0.1)
        assert not [s for s in b.admin("SHOW SERVERS") if s["tenant"] == "*shared*"]
    finally:
        for c in conns:
            c.close()


def test_many_new_tenants_at_once_are_all_welcomed(bouncer_factory, schemas, pg):
    """100 tenants new to a fresh pgtenant log in at the same moment: all are
    answered at once from the first shared connection's parameters, without
    a server login each (a first version left some waiting forever)."""
    # trust: every login completes at once, as md5 ones from a fast driver
    # do; and server logins slowed down (a busy server), so that tenants
    # arrive while the first ones are under way
    from conftest import APP_PASSWORD
    from faultproxy import FaultProxy

    logins = []

    def slow_login(t, body):
        if t == b"K":  # the first server login quick, the others slow
            logins.append(1)
            time.sleep(0.1 if len(logins) == 1 else 1.0)
        return None

    proxy = FaultProxy(pg.port, slow_login)
    b = shared_bouncer(bouncer_factory, settings={"default_pool_size": "4", "auth_type": "trust"},
                       databases={"appdb": "host=127.0.0.1 port=%d dbname=appdb user=app password=%s"
                                  % (proxy.port, APP_PASSWORD)})

    async def one(i):
        conn = await asyncpg.connect(host="127.0.0.1", port=b.port, user="app", database="appdb",
                                     password=b.users["app"], server_settings={"tenant": "s%d" % i},
                                     statement_cache_size=0, ssl=False, timeout=10)
        try:
            return await conn.fetchval("select owner from items")
        finally:
            await conn.close()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(100)))

    try:
        assert asyncio.run(main()) == ["s%d" % i for i in range(100)]
    finally:
        proxy.close()
    assert b.log_contains(r"login ok, backend pid") <= 4


def test_a_busy_dedicated_tenant_gets_connections_idle_tenants_hold(bouncer_factory, schemas):
    """Dedicated pools with max_db_connections full of idle tenants'
    connections: a busy tenant takes those idle for a second, up to its
    pool_size, instead of staying at one connection until
    server_idle_timeout."""
    b = shared_bouncer(bouncer_factory, settings={"tenant_pool_mode": "dedicated", "max_db_connections": "6",
                                                  "tenant_pool_size": "1"},
                       tenants={"heavy": "pool_size=4"})
    for i in range(6):
        with b.connect(options="-c tenant=s%d" % i) as conn:
            conn.execute("select 1")
    assert len(b.admin("SHOW SERVERS")) == 6
    time.sleep(1.2)
    watch = ServerWatch(b, interval=0.02)

    def heavy():
        with b.connect(options="-c tenant=heavy") as conn:
            for _ in range(6):
                conn.execute("select pg_sleep(0.1)")

    threads = [threading.Thread(target=heavy) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w = watch.done()
    assert w.peak_by_tenant.get("heavy", 0) == 4, w.peak_by_tenant
    assert w.peak_total <= 6
