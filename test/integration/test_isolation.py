"""Isolation that holds against any SQL: in transaction mode (and in session
mode) the next client of a server connection finds it as a fresh connection
of its pool would be, whatever the previous client ran and however it spelt
it; pins cannot be overridden at login; read-only parameters are never
replayed; per-tenant server roles are the privilege boundary."""
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import login_error
from faultproxy import FaultProxy, error_message

TENANTS = ["acme", "globex"]
DEFAULT_WORK_MEM = "4MB"


@pytest.fixture(scope="module")
def schemas(pg):
    with pg.connect("appdb", "postgres") as conn:
        for t in TENANTS:
            conn.execute("drop schema if exists tenant_%s cascade" % t)
            conn.execute("create schema tenant_%s authorization app" % t)
            conn.execute("create table tenant_%s.items(id int, owner text)" % t)
            conn.execute("alter table tenant_%s.items owner to app" % t)
            conn.execute("insert into tenant_%s.items select g, '%s' from generate_series(1, 3) g" % (t, t))
        conn.execute("drop role if exists iso_other")
        conn.execute("create role iso_other")
        conn.execute("grant iso_other to app")
        conn.execute("grant usage on schema tenant_globex to iso_other")
        conn.execute("grant select on tenant_globex.items to iso_other")
        conn.execute("create sequence if not exists public.iso_seq")
        conn.execute("grant usage on sequence public.iso_seq to public")
        conn.execute("""create or replace function public.iso_hop(t text) returns text language plpgsql as $$
                        begin
                          perform set_config('search_path', 'tenant_' || t, false);
                          perform set_config('app.tenant_id', t, false);
                          return t;
                        end $$""")
    return TENANTS


def iso_bouncer(factory, mode="transaction", settings=None, tenants=None, databases=None):
    # transaction_pinning off: these tests hand a connection to the next
    # client while the previous one, still connected, holds temporary tables
    # or locks; with pinning it would keep the connection (test_txn_session).
    # mode "shared": transaction mode on a shared pool of one connection,
    # which then serves both tenants in turn (issue 10)
    s = {"tenant_required": "yes", "tenant_setting": "app.tenant_id",
         "pool_mode": "transaction" if mode == "shared" else mode,
         "tenant_pool_mode": "shared" if mode == "shared" else "dedicated",
         "tenant_pool_size": "1", "default_pool_size": "1", "transaction_pinning": "off"}
    s.update(settings or {})
    t = {"acme": "pool_size=1", "globex": "pool_size=1"}
    t.update(tenants or {})
    return factory(settings=s, tenants=t, databases=databases)


def one(conn, sql):
    return conn.execute(sql).fetchone()[0]


def fresh_state(conn):
    """Everything a previous client could have left on a connection."""
    state = {
        "owners": {r[0] for r in conn.execute("select owner from items")},
        "search_path": one(conn, "show search_path"),
        "tenant_id": one(conn, "select current_setting('app.tenant_id', true)"),
        "user": tuple(conn.execute("select current_user, session_user").fetchone()),
        "work_mem": one(conn, "show work_mem"),
        "statement_timeout": one(conn, "show statement_timeout"),
        "read_only": one(conn, "show default_transaction_read_only"),
        "prepared": one(conn, "select count(*) from pg_prepared_statements "
                              "where from_sql or left(name, 10) <> '_pgtenant_'"),
        "cursors": one(conn, "select count(*) from pg_cursors"),
        "advisory_locks": one(conn, "select count(*) from pg_locks where locktype = 'advisory' "
                                    "and pid = pg_backend_pid()"),
        "listening": one(conn, "select count(*) from pg_listening_channels()"),
        "temp_objects": one(conn, "select count(*) from pg_class where relnamespace = pg_my_temp_schema()"),
    }
    try:
        conn.execute("select lastval()")
        state["lastval"] = "defined"
    except psycopg.errors.ObjectNotInPrerequisiteState:
        state["lastval"] = "undefined"
    return state


def expected_state(tenant, mode="transaction"):
    # (a shared pool SETs the path: PostgreSQL shows it without the quotes)
    path = ('tenant_%s, public' if mode == "shared" else '"tenant_%s", public') % tenant
    return {"owners": {tenant}, "search_path": path, "tenant_id": tenant,
            "user": ("app", "app"), "work_mem": DEFAULT_WORK_MEM, "statement_timeout": "0", "read_only": "off",
            "prepared": 0, "cursors": 0, "advisory_locks": 0, "listening": 0, "temp_objects": 0,
            "lastval": "undefined"}


# (name, statements run by the first acme client, each in its own transaction)
MUTATIONS = [
    ("unicode_escape", ['SET U&"\\0073earch_path" = tenant_globex']),
    ("quoted_name", ['SET "search_path" = tenant_globex', "SET \"app.tenant_id\" = 'globex'"]),
    ("spaced_name", ["SET   search_path   TO   tenant_globex  ,  public"]),
    ("set_config", ["select set_config('search_path', 'tenant_globex', false)"]),
    ("function", ["select public.iso_hop('globex')"]),
    ("do_block", ["DO $$ BEGIN EXECUTE format('SET %s = %L', 'search' || '_path', 'tenant_globex'); "
                  "EXECUTE 'SET app.tenant' || '_id = ''globex'''; END $$"]),
    ("prepared_earlier", ["PREPARE hop AS SELECT set_config('search_path', 'tenant_globex', false); EXECUTE hop"]),
    ("temp_table_shadow", ["CREATE TEMP TABLE items AS SELECT 1 AS id, 'globex'::text AS owner"]),
    ("set_role", ["SET ROLE iso_other"]),
    ("gucs", ["SET work_mem = '77MB'", "SET statement_timeout = '5s'",
              "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"]),
    ("sql_prepare", ["PREPARE p1 AS SELECT 1"]),
    ("hold_cursor", ["DECLARE c1 CURSOR WITH HOLD FOR SELECT 1"]),
    ("advisory_lock", ["SELECT pg_advisory_lock(4242)"]),
    ("listen", ["LISTEN iso_chan"]),
    ("sequence", ["SELECT nextval('public.iso_seq')"]),
]


@pytest.mark.parametrize("mode", ["transaction", "session", "shared"])
@pytest.mark.parametrize("name,statements", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_next_client_finds_a_fresh_connection(bouncer_factory, schemas, mode, name, statements):
    b = iso_bouncer(bouncer_factory, mode)
    with b.connect(options="-c tenant=acme") as a:
        pid = one(a, "select pg_backend_pid()")
        for sql in statements:
            a.execute(sql)
        if mode == "session":
            a.close()
        # a globex client in between sees only globex
        with b.connect(options="-c tenant=globex") as g:
            if mode == "shared":
                assert one(g, "select pg_backend_pid()") == pid, "one shared connection for both"
            assert fresh_state(g) == expected_state("globex", mode)
        # the next acme client gets the same single server connection, clean
        with b.connect(options="-c tenant=acme") as nxt:
            assert one(nxt, "select pg_backend_pid()") == pid, "the test must reuse the server connection"
            assert fresh_state(nxt) == expected_state("acme", mode)
            if name == "sql_prepare":
                nxt.execute("PREPARE p1 AS SELECT 2")  # the name is free again
            if name == "listen":
                got = []
                nxt.add_notify_handler(got.append)
                with b.connect(options="-c tenant=globex") as g:
                    g.execute("NOTIFY iso_chan, 'from globex'")
                for _ in range(5):
                    nxt.execute("select 1")
                    time.sleep(0.05)
                assert got == []


def test_protocol_parse_then_later_bind(bouncer_factory, schemas):
    """A named statement Parsed in one message and Bound in a later one (one
    link: the client keeps the transaction's pipeline open) changes nothing
    for the next client."""
    b = iso_bouncer(bouncer_factory)
    s, _ = pgwire.login(b, extra={"options": "-c tenant=acme"})
    sql = b"SELECT set_config('search_path', 'tenant_globex', false)"
    s.sendall(pgwire.msg(b"P", b"s1\0" + sql + b"\0\0\0") + pgwire.msg(b"H", b""))
    t, _ = pgwire.recv_msg(s)
    assert t == b"1"
    s.sendall(pgwire.msg(b"B", b"\0s1\0\0\0\0\0\0\0") + pgwire.msg(b"E", b"\0\0\0\0\0") + pgwire.msg(b"S", b""))
    msgs = pgwire.read_until_ready(s)
    assert [t for t, _ in msgs] == [b"2", b"D", b"C", b"Z"]
    assert pgwire.data_rows(msgs) == ["tenant_globex"]
    with b.connect(options="-c tenant=acme") as nxt:
        assert fresh_state(nxt) == expected_state("acme")
    s.close()


@pytest.mark.parametrize("mode", ["transaction", "shared"])
def test_every_transaction_is_clean_under_concurrency(bouncer_factory, schemas, mode):
    """Two tenants, three clients each, pools of one (or one shared
    connection for both tenants): every client alternates a random
    state-changing transaction and a transaction that checks it got a clean
    connection.  Zero foreign rows or state."""
    b = iso_bouncer(bouncer_factory, mode, settings={"query_wait_timeout": "60"})
    errors = []
    # (a reported parameter a client SETs, like default_transaction_read_only,
    # stays with that client by design, so the checker would see its own)
    statements = [sql for _, stmts in MUTATIONS for sql in stmts if "CHARACTERISTICS" not in sql]

    # a client's own session SETs stay with it (transaction-mode SET
    # tracking), never with another client
    own_sets = {"SET work_mem = '77MB'": ("work_mem", "77MB"), "SET statement_timeout = '5s'": ("statement_timeout", "5s")}

    def worker(tenant, n):
        try:
            with b.connect(options="-c tenant=%s" % tenant) as conn:
                want = expected_state(tenant, mode)
                for i in range(25):
                    sql = statements[(n * 7 + i) % len(statements)]
                    conn.execute(sql.replace("globex", "acme" if tenant == "globex" else "globex"))
                    if sql in own_sets:
                        want[own_sets[sql][0]] = own_sets[sql][1]
                    got = fresh_state(conn)
                    if got != want:
                        errors.append((tenant, n, i, sql, {k: v for k, v in got.items() if want[k] != v}))
        except Exception as e:  # noqa: BLE001 - report any failure
            errors.append((tenant, n, repr(e)))

    threads = [threading.Thread(target=worker, args=(t, n)) for t in TENANTS for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


@pytest.mark.parametrize("superuser", [False, True])
def test_role_changes_never_reach_or_kill_other_clients(bouncer_factory, schemas, pg, superuser):
    """After SET ROLE (or SET SESSION AUTHORIZATION on a superuser pool) by
    one client, 20 other clients of the pool run normally as themselves:
    is_superuser and session_authorization, which the server reports, are
    never replayed, and no client gets the foreign role."""
    db = {"sudb": "host=127.0.0.1 port=%d dbname=appdb user=postgres" % pg.port}
    b = bouncer_factory(settings={"default_pool_size": "2", "query_wait_timeout": "60"}, databases=db)
    dbname, me = ("sudb", "postgres") if superuser else ("appdb", "app")
    with b.connect(dbname=dbname) as a:
        with a.transaction():
            if superuser:
                a.execute("SET SESSION AUTHORIZATION app")
                assert one(a, "select session_user") == "app"
            a.execute("SET ROLE iso_other")
            assert one(a, "select current_user") == "iso_other"
        # the changer keeps its role as on PostgreSQL: pgtenant pins it to its
        # connection (transaction_pinning = auto) rather than replay a role
        assert tuple(a.execute("select current_user, session_user").fetchone()) == \
            ("iso_other", "app" if superuser else me)
        errors = []

        def client():
            try:
                with b.connect(dbname=dbname) as c:
                    for _ in range(5):
                        got = tuple(c.execute("select current_user, session_user").fetchone())
                        if got != (me, me):
                            errors.append(got)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=client) for _ in range(20)]
        for t in threads:
            t.start()
        for _ in range(10):
            a.execute("SET ROLE iso_other; SET SESSION AUTHORIZATION DEFAULT" if superuser else "SET ROLE iso_other")
        for t in threads:
            t.join()
        assert errors == []
    assert b.log_contains("55P02") == 0


def test_pins_cannot_be_overridden_at_login(bouncer_factory, schemas):
    b = iso_bouncer(bouncer_factory, tenants={"acme": "pool_size=1 statement_timeout=30s"})
    attempts = [
        {"options": "-c tenant=acme -c search_path=tenant_globex"},
        {"options": "-c tenant=acme -c SEARCH_PATH=tenant_globex"},
        {"options": "-c tenant=acme --search-path=tenant_globex"},
        {"tenant": "acme", "search_path": "tenant_globex"},
        {"tenant": "acme", "options": "-c app.tenant_id=globex"},
        {"tenant": "acme", "app.tenant_id": "globex"},
        {"tenant": "acme", "options": "-c statement_timeout=0"},  # pinned for acme by [tenants]
    ]
    for settings in attempts:
        code, msg = login_error(b, server_settings=settings)
        assert code == "08004" and msg.startswith("cannot override"), (settings, code, msg)
    # statement_timeout is not pinned for globex: a client may bring its own
    assert login_error(b, server_settings={"tenant": "globex", "options": "-c statement_timeout=1s"}) == (None, None)
    # two different tenants in one options value
    code, msg = login_error(b, server_settings={"options": "-c tenant=acme -c tenant=globex"})
    assert code == "08004" and msg.startswith("conflicting tenant"), msg
    assert login_error(b, server_settings={"options": "-c tenant=acme -c tenant=acme"}) == (None, None)


def test_plain_pool_may_set_search_path_at_login(bouncer_factory, schemas):
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect(options="-c search_path=tenant_globex") as conn:
        assert {r[0] for r in conn.execute("select owner from items")} == {"globex"}
    with b.connect() as conn:  # the next client of the same server: back to the default
        assert one(conn, "show search_path") == '"$user", public'


def test_pipelined_client_after_a_dirty_client(bouncer_factory, schemas):
    """A client that pipelines several synced batches right after another
    client dirtied the connection: every batch runs on the clean connection
    and gets its answers in order."""
    b = iso_bouncer(bouncer_factory)
    with b.connect(options="-c tenant=acme") as a:
        a.execute("SET search_path = tenant_globex")
    s, _ = pgwire.login(b, extra={"options": "-c tenant=acme"})
    batch = b"".join(pgwire.msg(b"Q", b"select owner from items limit 1\0") for _ in range(5))
    s.sendall(batch)
    msgs = pgwire.read_until_ready(s, 5)
    assert pgwire.data_rows(msgs) == ["acme"] * 5
    s.close()


def test_reset_failure_closes_only_that_connection(bouncer_factory, schemas, pg):
    """If the reset fails (here: the backend is terminated while idle in the
    pool), the next client gets a clear error or a new connection, and the
    pool goes on."""
    b = iso_bouncer(bouncer_factory, settings={"server_login_retry": "0"})
    with b.connect(options="-c tenant=acme") as a:
        pid = one(a, "select pg_backend_pid()")
        a.execute("SET work_mem = '77MB'")
    pg.sql("select pg_terminate_backend(%d)" % pid)
    time.sleep(0.2)
    for _ in range(3):
        try:
            with b.connect(options="-c tenant=acme") as nxt:
                assert fresh_state(nxt) == expected_state("acme")
                break
        except psycopg.OperationalError as e:
            assert "server connection failed" in str(e)
    else:
        pytest.fail("pool did not recover")


def test_failed_reset_fails_the_next_client_cleanly(bouncer_factory, schemas, pg):
    """If the reset fails (a fault proxy turns the server's answer to it into
    the error a cancel would give), the next client gets a clear error, that
    server connection is closed, and the pool goes on with a new one.  (That
    nothing the client sent runs is PostgreSQL's part: after an error in an
    unsynced extended-protocol batch it skips all input up to the next Sync,
    and the client's messages past its first Sync are held until the reset is
    confirmed.)"""
    armed = threading.Event()

    def rewrite(t, body):
        if t == b"C" and body == b"DISCARD ALL\0" and armed.is_set():
            armed.clear()
            return error_message("57014", "canceling statement due to user request")
        return None

    proxy = FaultProxy(pg.port, rewrite)
    db = {"appdb": "host=127.0.0.1 port=%d dbname=appdb user=app password=apppass" % proxy.port}
    b = iso_bouncer(bouncer_factory, databases=db)
    try:
        with b.connect(options="-c tenant=acme") as a:
            pid = one(a, "select pg_backend_pid()")
            a.execute("SET work_mem = '77MB'")
        armed.set()
        victim = b.connect(options="-c tenant=acme")
        with pytest.raises(psycopg.OperationalError) as e:
            victim.execute("select 1")
        victim.close()
        assert "server connection failed: could not reset the connection" in str(e.value), str(e.value)
        with b.connect(options="-c tenant=acme") as nxt:
            assert one(nxt, "select pg_backend_pid()") != pid
            assert fresh_state(nxt) == expected_state("acme")
            nxt.execute("SET work_mem = '77MB'")
        # a pipelining client: its second batch never reaches the server
        armed.set()
        s, _ = pgwire.login(b, extra={"options": "-c tenant=acme"})
        s.sendall(pgwire.msg(b"Q", b"select 'first batch'\0") + pgwire.msg(b"Q", b"select 'second batch'\0"))
        t, body = pgwire.recv_msg(s)
        assert t == b"E" and "could not reset" in pgwire.error_fields(body)["M"]
        s.close()
        time.sleep(0.2)
        assert b"first batch" in proxy.upstream_bytes and b"second batch" not in proxy.upstream_bytes
    finally:
        proxy.close()


def test_server_connections_watch_for_a_vanished_pgtenant(bouncer_factory, schemas):
    """PostgreSQL 14+: server connections run with client_connection_check_interval,
    so a query whose server socket pgtenant closed ends instead of running on."""
    b = iso_bouncer(bouncer_factory)
    with b.connect(options="-c tenant=acme") as conn:
        assert one(conn, "show client_connection_check_interval") == "1s"


def test_copy_from_stdin_releases_the_connection_at_its_end(bouncer_factory, schemas):
    """COPY data belongs to the COPY's Query: when the COPY is answered the
    server connection goes back to the pool (pool of one: the next client
    gets it while the first stays connected and idle)."""
    b = iso_bouncer(bouncer_factory, settings={"query_wait_timeout": "3"})
    with b.connect(options="-c tenant=acme") as a:
        a.execute("create table if not exists public.copy_release(x int)")
        with a.cursor().copy("COPY public.copy_release FROM STDIN") as cp:
            for i in range(100):
                cp.write_row((i,))
        with b.connect(options="-c tenant=acme") as other:
            assert one(other, "select count(*) >= 100 from public.copy_release") is True


def wait_for(conn, got, marker, timeout=5.0):
    """Read from conn until a notification with payload marker has come."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        conn.execute("select 1")
        if any(n.payload == marker for n in got):
            return
        time.sleep(0.05)
    raise AssertionError("notification %r never came (got %r)" % (marker, [n.payload for n in got]))


SENDS = [  # how a client may send a notification (none of it visible as SQL text to scan)
    "NOTIFY orders, '%s'",
    "select pg_notify('orders', '%s')",
    "DO $$ BEGIN PERFORM pg_notify('ord' || 'ers', '%s'); END $$",
    "NOTIFY U&\"\\006Frders\", '%s'",
    "select pg_notify('orders', '%s' || repeat('.', 7900))",  # larger than pkt_buf
]


@pytest.mark.parametrize("mode", ["transaction", "session", "shared_listener"])
def test_notifications_stay_inside_a_tenant(bouncer_factory, schemas, pg, mode):
    """PostgreSQL's channels belong to the database: without pgtenant every
    tenant listening on "orders" hears every tenant's NOTIFY orders.  A
    notification sent from another tenant's dedicated connection never
    reaches a client; its own tenant's, its own and outsiders' do.
    shared_listener: the listener's tenant is on a shared pool, the sender's
    dedicated."""
    settings = {"transaction_pinning": "auto", "default_pool_size": "3", "pkt_buf": "4096"}
    tenants = {"acme": "pool_size=2", "globex": "pool_size=2"}
    if mode == "shared_listener":
        settings["tenant_pool_mode"] = "shared"
        tenants["globex"] = "pool_size=2 tenant_pool_mode=dedicated"
    b = iso_bouncer(bouncer_factory, "session" if mode == "session" else "transaction", settings, tenants)
    listeners, got = {}, {}
    for t in TENANTS:
        listeners[t] = b.connect(options="-c tenant=%s" % t)
        got[t] = []
        listeners[t].add_notify_handler(got[t].append)
        listeners[t].execute("LISTEN orders")
    try:
        # each tenant sends in every way, from a client of its own, concurrently
        def send(t):
            with b.connect(options="-c tenant=%s" % t) as c:
                for i, sql in enumerate(SENDS * 5):
                    c.execute(sql % ("%s-%d" % (t, i)))
        threads = [threading.Thread(target=send, args=(t,)) for t in TENANTS if mode != "shared_listener" or t == "globex"]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # the listener's own NOTIFY, and one from a backend outside pgtenant
        for t in TENANTS:
            listeners[t].execute("NOTIFY orders, 'self-%s'" % t)
        with pg.connect("appdb", "postgres") as direct:
            direct.execute("NOTIFY orders, 'outside'")
        # a last one from its own tenant: once it is in, everything sent before it is
        for t in TENANTS:
            with b.connect(options="-c tenant=%s" % t) as c:
                c.execute("NOTIFY orders, 'last-%s'" % t)
        for t in TENANTS:
            wait_for(listeners[t], got[t], "last-%s" % t)
        for t in TENANTS:
            payloads = [n.payload.rstrip(".") for n in got[t]]
            other = [x for x in TENANTS if x != t][0]
            foreign = [p for p in payloads if other in p]
            # (globex does hear acme's shared connections: a shared pool's
            # sender cannot be named, see notify.c)
            if mode != "shared_listener" or t == "acme":
                assert foreign == [], "%s heard %s: %r" % (t, other, foreign)
            assert "self-%s" % t in payloads and "outside" in payloads
            own = sorted(p for p in payloads if p.startswith(t + "-"))
            sent = t == "globex" or mode != "shared_listener"
            assert own == (sorted("%s-%d" % (t, i) for i in range(len(SENDS) * 5)) if sent else [])
    finally:
        for c in listeners.values():
            c.close()
