"""Reload without dropping connections: removed databases and tenants drain
(clients already in keep working, new ones are refused, server connections
close once nobody needs them), a changed backend address closes the old
server connections as they are released, and concurrent tenants never see
each other's rows across a reload."""
import threading
import time

from conftest import login_error


def servers_of(b, database):
    return [s for s in b.admin("SHOW SERVERS") if s["database"] == database]


def wait_for(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_removed_database_drains(bouncer_factory):
    b = bouncer_factory()
    b.databases["olddb"] = b.databases["appdb"]
    b.reload()
    inside = b.connect(dbname="olddb", autocommit=False)
    inside.execute("create temp table t(x int) on commit drop")  # a transaction is open
    idle = b.connect(dbname="olddb")
    idle.execute("select 1")
    del b.databases["olddb"]
    b.reload()
    assert b.log_contains("database olddb removed") >= 1
    # the open transaction finishes on its server connection
    inside.execute("insert into t values (1)")
    assert inside.execute("select count(*) from t").fetchone()[0] == 1
    inside.commit()
    # clients already in keep being served, transaction after transaction
    for i in range(20):
        assert idle.execute("select %s::int", [i]).fetchone()[0] == i
        assert inside.execute("select 2").fetchone()[0] == 2
        inside.commit()
    # new logins are refused; the entry is gone from SHOW DATABASES, its pool stays
    code, msg = login_error(b, dbname="olddb")
    assert code == "3D000" and "olddb" in msg
    assert "olddb" not in [d["name"] for d in b.admin("SHOW DATABASES")]
    assert "olddb" in [p["database"] for p in b.admin("SHOW POOLS")]
    assert servers_of(b, "olddb")
    # once its clients are gone, its server connections close
    inside.close()
    idle.close()
    assert wait_for(lambda: not servers_of(b, "olddb"))
    # other databases never noticed
    with b.connect() as conn:
        assert conn.execute("select 3").fetchone()[0] == 3
    # and the entry can come back
    b.databases["olddb"] = b.databases["appdb"]
    b.reload()
    with b.connect(dbname="olddb") as conn:
        assert conn.execute("select 4").fetchone()[0] == 4


def test_removed_tenant_drains(bouncer_factory, pg):
    b = bouncer_factory(settings={"tenant_required": "yes", "unknown_tenant": "reject"},
                        tenants={"acme": "pool_size=2", "globex": "pool_size=2"})
    kept = b.connect(options="-c tenant=globex")
    assert kept.execute("select current_setting('search_path')").fetchone()[0].startswith('"tenant_globex"')
    b.reload(tenants={"acme": "pool_size=2"})
    code, msg = login_error(b, server_settings={"tenant": "globex"})
    assert code == "08004" and msg.startswith("unknown tenant")
    for _ in range(20):  # the session keeps going, still pinned to its tenant
        assert kept.execute("select current_setting('search_path')").fetchone()[0].startswith('"tenant_globex"')
    assert login_error(b, server_settings={"tenant": "acme"}) == (None, None)
    kept.close()


def test_changed_backend_closes_old_servers_when_released(bouncer_factory, pg):
    b = bouncer_factory()
    conn = b.connect(autocommit=False)
    old_pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # transaction open
    # same server, reached by another address: a different backend for pgtenant
    b.databases["appdb"] = b.databases["appdb"].replace("host=127.0.0.1", "host=localhost")
    b.reload()
    assert conn.execute("select pg_backend_pid()").fetchone()[0] == old_pid  # not dropped mid-transaction
    conn.commit()
    new_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    conn.commit()
    assert new_pid != old_pid
    assert wait_for(lambda: pg.sql("select count(*) from pg_stat_activity where pid = %d" % old_pid)[0][0] == 0)
    conn.close()


def test_reload_under_concurrent_tenants_never_leaks(bouncer_factory, pg):
    with pg.connect("appdb", "app") as c:
        for t in ("acme", "globex"):
            c.execute("drop schema if exists tenant_%s cascade" % t)
            c.execute("create schema tenant_%s" % t)
            c.execute("create table tenant_%s.items(owner text)" % t)
            c.execute("insert into tenant_%s.items values ('%s')" % (t, t))
    b = bouncer_factory(settings={"tenant_required": "yes", "tenant_pool_size": "2"},
                        tenants={"acme": "pool_size=2", "globex": "pool_size=2"})
    errors, seen = [], {"acme": set(), "globex": set()}
    stop = threading.Event()

    def run(tenant):
        try:
            with b.connect(options="-c tenant=%s" % tenant) as conn:
                n = 0
                while not stop.is_set() and n < 5000:
                    seen[tenant].update(r[0] for r in conn.execute("select owner from items"))
                    n += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in ("acme", "globex") for _ in range(3)]
    for t in threads:
        t.start()
    for size in (1, 3, 2):
        time.sleep(0.3)
        b.reload(tenants={"acme": "pool_size=%d" % size, "globex": "pool_size=%d" % size},
                 default_pool_size=size + 2)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert seen == {"acme": {"acme"}, "globex": {"globex"}}
