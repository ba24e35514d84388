"""Transaction mode for session state (issue P5): a client's session SETs
follow it to whichever server connection its next transaction gets, and
state that cannot follow it (temporary tables, advisory locks, LISTEN, SQL
prepared statements, held cursors) pins it to its connection.  Other
clients of the same pool never see any of it."""
import threading
import time

import psycopg
import pytest


def pool_of(bouncer_factory, size, **settings):
    s = {"default_pool_size": str(size)}
    s.update(settings)
    return bouncer_factory(settings=s)


def churn(b, stop, n=2):
    """Other clients keeping the pool's connections busy, so that a
    client's next transaction lands on another connection."""
    def run():
        with b.connect() as c:
            while not stop.is_set():
                c.execute("SELECT pg_sleep(0.002)")
    ts = [threading.Thread(target=run) for _ in range(n)]
    for t in ts:
        t.start()
    return ts


def pinned(b, want=True, timeout=3.0):
    """SHOW CLIENTS' pinned column of the pinned clients, once pgtenant's
    check after the last transaction (which runs after the client has its
    answer) has had its effect."""
    deadline = time.time() + timeout
    while True:
        rows = [r["pinned"] for r in b.admin("SHOW CLIENTS") if r["pinned"]]
        if bool(rows) == want or time.time() > deadline:
            return rows
        time.sleep(0.01)


def on_other_backend(conn, first_pid, tries=200):
    """Run transactions until one lands on a backend other than first_pid."""
    for _ in range(tries):
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        if pid != first_pid:
            return pid
        time.sleep(0.003)
    raise AssertionError("never moved to another server connection")


def test_session_set_follows_the_client(bouncer_factory):
    b = pool_of(bouncer_factory, 2)
    stop = threading.Event()
    ts = churn(b, stop)
    try:
        with b.connect() as a, b.connect() as innocent:
            a.execute("SET statement_timeout = '1s'")
            a.execute("SELECT set_config('app.flavour', 'mint', false)")
            pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
            on_other_backend(a, pid)
            assert a.execute("SHOW statement_timeout").fetchone()[0] == "1s"
            assert a.execute("SELECT current_setting('app.flavour')").fetchone()[0] == "mint"
            with pytest.raises(psycopg.errors.QueryCanceled):
                a.execute("SELECT pg_sleep(2)")
            # nobody else inherits it
            for _ in range(30):
                assert innocent.execute("SHOW statement_timeout").fetchone()[0] == "0"
                assert innocent.execute("SELECT current_setting('app.flavour', true)").fetchone()[0] in (None, "")
            innocent.execute("SELECT pg_sleep(1.3)")
            # RESET forgets it
            a.execute("RESET statement_timeout")
            on_other_backend(a, a.execute("SELECT pg_backend_pid()").fetchone()[0])
            assert a.execute("SHOW statement_timeout").fetchone()[0] == "0"
            assert a.execute("SELECT current_setting('app.flavour')").fetchone()[0] == "mint"
    finally:
        stop.set()
        for t in ts:
            t.join()


def test_set_local_is_not_carried(bouncer_factory):
    b = pool_of(bouncer_factory, 1)
    with b.connect(autocommit=False) as a, b.connect() as other:
        a.execute("SET LOCAL statement_timeout = '3s'")
        a.commit()
        other.execute("SELECT 1")
        assert a.execute("SHOW statement_timeout").fetchone()[0] == "0"
        a.commit()


def scrape(b, port):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode()


def metric(text, name):
    return [float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + "{")]


def test_temp_table_pins_until_dropped(bouncer_factory):
    from conftest import free_port
    port = free_port()
    b = pool_of(bouncer_factory, 2, metrics_listen="127.0.0.1:%d" % port)
    stop = threading.Event()
    # two others on a pool of two: unpinned, the client must share
    ts = churn(b, stop, n=2)
    try:
        with b.connect() as a:
            a.execute("CREATE TEMP TABLE scratch (n int)")
            pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
            for i in range(20):
                a.execute("INSERT INTO scratch VALUES (%s)", (i,))
                time.sleep(0.002)
            assert a.execute("SELECT count(*), pg_backend_pid() FROM scratch").fetchone() == (20, pid)
            rows = pinned(b)
            assert len(rows) == 1 and "temp" in rows[0]
            text = scrape(b, port)
            assert metric(text, "pgtenant_clients_pinned") == [1.0]
            assert metric(text, "pgtenant_client_pins_total") == [1.0]
            a.execute("DROP TABLE scratch")
            assert not pinned(b, False)
            assert metric(scrape(b, port), "pgtenant_clients_pinned") == [0.0]
            on_other_backend(a, pid)  # free to move again
    finally:
        stop.set()
        for t in ts:
            t.join()


def test_advisory_lock_sql_prepare_listen_cursor(bouncer_factory):
    b = pool_of(bouncer_factory, 2)
    with b.connect() as a, b.connect() as c:
        a.execute("SELECT pg_advisory_lock(77)")
        for _ in range(10):
            assert c.execute("SELECT pg_try_advisory_lock(77)").fetchone()[0] is False
            assert a.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                             ).fetchone()[0] == 1
        a.execute("SELECT pg_advisory_unlock(77)")
        assert c.execute("SELECT pg_try_advisory_lock(77)").fetchone()[0] is True
        c.execute("SELECT pg_advisory_unlock(77)")
        a.execute("PREPARE byname(int) AS SELECT $1 * 2")
        for i in range(10):
            c.execute("SELECT 1")
            assert a.execute("EXECUTE byname(%d)" % i).fetchone()[0] == 2 * i
        assert c.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'byname'").fetchone()[0] == 0
        a.execute("DEALLOCATE byname")
        a.execute("LISTEN news")
        got = []
        a.add_notify_handler(lambda n: got.append(n.payload))
        c.execute("NOTIFY news, 'hello'")
        for _ in range(50):
            a.execute("SELECT 1")
            if got:
                break
            time.sleep(0.02)
        assert got == ["hello"]
        a.execute("UNLISTEN news")
        a.execute("BEGIN")
        a.execute("DECLARE cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 5) g")
        a.execute("COMMIT")
        fetched = []
        for _ in range(5):
            c.execute("SELECT 1")
            fetched += [r[0] for r in a.execute("FETCH 1 FROM cur").fetchall()]
        assert fetched == [1, 2, 3, 4, 5]
        a.execute("CLOSE cur")
        assert not pinned(b, False)


def test_pinning_off(bouncer_factory):
    b = pool_of(bouncer_factory, 2, transaction_pinning="off")
    stop = threading.Event()
    ts = churn(b, stop, n=2)
    try:
        with b.connect() as a:
            a.execute("CREATE TEMP TABLE gone (n int)")
            pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
            on_other_backend(a, pid)
            with pytest.raises(psycopg.errors.UndefinedTable):
                a.execute("SELECT * FROM gone")
    finally:
        stop.set()
        for t in ts:
            t.join()


def test_tenant_pin_is_never_carried(bouncer_factory, pg):
    pg.sql("CREATE SCHEMA IF NOT EXISTS tenant_acme AUTHORIZATION app", dbname="appdb")
    b = bouncer_factory(settings={"tenant_required": "yes", "default_pool_size": "1",
                                  "tenant_setting": "app.tenant_id"},
                        tenants={"acme": "pool_size=1"}, users={"app.acme": "apppass"})
    with psycopg.connect(b.dsn(user="app.acme", password="apppass"), autocommit=True) as a, \
            psycopg.connect(b.dsn(user="app.acme", password="apppass"), autocommit=True) as c:
        a.execute("SET search_path = public")
        a.execute("SET app.tenant_id = 'other'")
        c.execute("SELECT 1")
        assert a.execute("SHOW search_path").fetchone()[0].startswith('"tenant_acme"') or \
            "tenant_acme" in a.execute("SHOW search_path").fetchone()[0]
        assert a.execute("SELECT current_setting('app.tenant_id')").fetchone()[0] == "acme"
        assert "tenant_acme" in c.execute("SHOW search_path").fetchone()[0]


def test_hint_words_anywhere_in_the_text(bouncer_factory):
    """The words no tag shows are noticed wherever they fall in the text
    (the scan takes 16 bytes at a time, then the rest)."""
    b = pool_of(bouncer_factory, 2)
    with b.connect() as a:
        for pad in range(0, 40):
            a.execute("SELECT %s pg_advisory_lock(%d)" % (" " * pad, pad))
            assert pinned(b) and "advisory_lock" in pinned(b)[0], pad
            a.execute("SELECT %s pg_advisory_unlock(%d)" % (" " * pad, pad))
            assert not pinned(b, False), pad
            a.execute("SELECT %s set_config('app.pad%d', 'x', false)" % (" " * pad, pad))
            a.execute("SELECT 1")
            assert a.execute("SELECT current_setting('app.pad%d')" % pad).fetchone()[0] == "x"


def test_back_on_its_own_connection(bouncer_factory, pg):
    """Affinity: a client gets its last connection back while nobody else
    used it, with its prepared statements still there (never parsed again,
    though one use per transaction would have the reset discard them), but
    everything else reset as for anyone: a tenant pin it changed unseen
    inside a function, a sequence's currval."""
    pg.sql("CREATE SCHEMA IF NOT EXISTS tenant_acme AUTHORIZATION app", dbname="appdb")
    pg.sql("DROP SEQUENCE IF EXISTS tenant_acme.aff_seq; CREATE SEQUENCE tenant_acme.aff_seq;"
           "GRANT ALL ON tenant_acme.aff_seq TO app;"
           "CREATE OR REPLACE FUNCTION public.aff_hop() RETURNS text LANGUAGE plpgsql AS $$ BEGIN "
           "PERFORM set_config('search' || '_path', 'public', false); "
           "PERFORM set_config('app.tenant' || '_id', 'other', false); RETURN 'x'; END $$", dbname="appdb")
    b = bouncer_factory(settings={"tenant_required": "yes", "default_pool_size": "2",
                                  "tenant_setting": "app.tenant_id"},
                        tenants={"acme": "pool_size=2"}, users={"app.acme": "apppass"})
    with psycopg.connect(b.dsn(user="app.acme", password="apppass"), autocommit=True,
                         prepare_threshold=0) as a:
        q = "SELECT pg_backend_pid(), current_setting('search_path'), current_setting('app.tenant_id')"
        pid = a.execute(q).fetchone()[0]
        parses = b.admin("SHOW STATS_TOTALS")[0]["server_parse_count"]
        for _ in range(10):
            a.execute("SELECT public.aff_hop()")
            a.execute("SELECT nextval('aff_seq')")
            got = a.execute(q).fetchone()
            assert got[0] == pid and "tenant_acme" in got[1] and got[2] == "acme", got
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
                a.execute("SELECT currval('aff_seq')")
        # its three statements were parsed once each, the first time
        assert b.admin("SHOW STATS_TOTALS")[0]["server_parse_count"] - parses <= 3
