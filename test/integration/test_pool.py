"""Pool sizing knobs and server-side login methods."""
import threading
import time

import psycopg
import pytest


def sleepers(b, n, seconds, user="app", dbname="appdb"):
    conns = [b.connect(user, dbname) for _ in range(n)]
    threads = [threading.Thread(target=c.execute, args=("select pg_sleep(%s)" % seconds,)) for c in conns]
    for t in threads:
        t.start()
    return conns, threads


def finish(conns, threads):
    for t in threads:
        t.join()
    for c in conns:
        c.close()


def max_backends(pg, duration, user="app"):
    seen = 0
    deadline = time.time() + duration
    while time.time() < deadline:
        seen = max(seen, pg.backends(user))
        time.sleep(0.05)
    return seen


def test_min_pool_size(bouncer_factory, pg):
    b = bouncer_factory(settings={"min_pool_size": "3"})
    with b.connect() as conn:
        conn.execute("select 1")
        deadline = time.time() + 5
        while pg.backends() < 3 and time.time() < deadline:
            time.sleep(0.1)
        assert pg.backends() == 3


def test_max_db_connections(bouncer_factory, pg):
    b = bouncer_factory(settings={"default_pool_size": "5", "max_db_connections": "2"})
    conns, threads = sleepers(b, 4, 1.0)
    seen = max_backends(pg, 0.8)
    finish(conns, threads)
    assert seen == 2


def test_reserve_pool(bouncer_factory, pg):
    b = bouncer_factory(settings={"default_pool_size": "1", "reserve_pool_size": "1",
                                  "reserve_pool_timeout": "0.3"})
    conns, threads = sleepers(b, 3, 1.5)
    early = max_backends(pg, 0.2)
    late = max_backends(pg, 0.9)
    finish(conns, threads)
    assert early == 1 and late == 2


def test_fifo_waiting(bouncer_factory):
    """With one server, waiting clients are served in arrival order (recorded
    by the server itself, in a sequence)."""
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect() as conn:
        conn.execute("create table if not exists fifo_t(seq serial, client int)")
        conn.execute("truncate fifo_t")
    holder = b.connect(autocommit=False)
    holder.execute("select 1")
    conns = [b.connect() for _ in range(5)]
    threads = []
    for i in range(5):
        t = threading.Thread(target=conns[i].execute, args=("insert into fifo_t(client) values (%s)" % i,))
        t.start()
        threads.append(t)
        time.sleep(0.1)  # arrive in order
    holder.commit()
    for t in threads:
        t.join()
    holder.close()
    with b.connect() as conn:
        order = [r[0] for r in conn.execute("select client from fifo_t order by seq")]
    for c in conns:
        c.close()
    assert order == [0, 1, 2, 3, 4]


def test_cleartext_server_auth(bouncer):
    with bouncer.connect("pwuser", "pwdb") as conn:
        assert conn.execute("select current_user").fetchone()[0] == "pwuser"


def test_server_host_by_name(bouncer_factory):
    b = bouncer_factory(settings={"auth_type": "trust"})
    with b.connect("trustuser", "namedb", password="") as conn:
        assert conn.execute("select inet_server_addr()::text").fetchone()[0] in ("127.0.0.1/32", "127.0.0.1")


def test_unresolvable_host(bouncer_factory):
    b = bouncer_factory(settings={"auth_type": "trust"},
                        databases={"nxdb": "host=no-such-host.invalid port=5432 dbname=x user=trustuser"})
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect("trustuser", "nxdb", password="")
    assert "server connection failed" in str(e.value) and "resolve" in str(e.value)


def test_unix_socket_backend_and_listener(bouncer_factory, tmp_path):
    b = bouncer_factory(settings={"auth_type": "trust", "unix_socket_dir": str(tmp_path)})
    with psycopg.connect(host=str(tmp_path), port=b.port, user="trustuser", dbname="unixdb",
                         autocommit=True) as conn:
        assert conn.execute("select inet_server_addr()").fetchone()[0] is None  # PostgreSQL over its socket
    assert (tmp_path / (".s.PGSQL.%d" % b.port)).exists()
