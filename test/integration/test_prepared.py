"""Transaction mode with prepared statements (issue P5): a client's named
statements follow it from server connection to server connection, are
shared between clients of one connection, evicted by LRU, and never seen by
another client or tenant."""
import os
import socket
import struct
import threading
import time

import psycopg
import pytest

import pgwire
from pgwire import msg, recv_msg


def tenant_bouncer(bouncer_factory, pg, size=2, **settings):
    for t in ("acme", "globex"):
        pg.sql("DROP SCHEMA IF EXISTS tenant_%s CASCADE; CREATE SCHEMA tenant_%s AUTHORIZATION app; "
               "CREATE TABLE tenant_%s.t (id int primary key, who text); "
               "ALTER TABLE tenant_%s.t OWNER TO app; "
               "INSERT INTO tenant_%s.t SELECT g, '%s' FROM generate_series(1, 100) g" % ((t,) * 5 + (t,)),
               dbname="appdb")
    s = {"tenant_required": "yes", "default_pool_size": str(size)}
    s.update(settings)
    return bouncer_factory(settings=s, tenants={"acme": "pool_size=%d" % size, "globex": "pool_size=%d" % size},
                           users={"app.acme": "apppass", "app.globex": "apppass"})


def test_psycopg_default_prepare_threshold(bouncer_factory, pg):
    b = tenant_bouncer(bouncer_factory, pg)
    errors, foreign, done = [], [], []

    def worker(tenant, n):
        try:
            with psycopg.connect(b.dsn(user="app." + tenant, password="apppass"), autocommit=True) as conn:
                for i in range(n):
                    row = conn.execute("SELECT who, id FROM t WHERE id = %s", (i % 100 + 1,)).fetchone()
                    if row[0] != tenant:
                        foreign.append(row)
                done.append(1)
        except Exception as e:  # noqa
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(("acme", "globex")[i % 2], 100)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:3]
    assert not foreign
    assert len(done) == 8
    stats = b.admin("SHOW STATS_TOTALS")
    print(stats)


# ---- the protocol, message by message (raw wire client) ----

def P(name, sql, types=()):
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", len(types)) +
               b"".join(struct.pack("!I", t) for t in types))


def B(stmt, params=(), portal=""):
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            body += struct.pack("!i", len(p)) + p.encode()
    return msg(b"B", body + struct.pack("!H", 0))


def D(kind, name):
    return msg(b"D", kind + name.encode() + b"\0")


def C(kind, name):
    return msg(b"C", kind + name.encode() + b"\0")


E = msg(b"E", b"\0" + struct.pack("!I", 0))
S = msg(b"S", b"")
H = msg(b"H", b"")


def answers(s, n=1):
    """Message types and payloads up to the n-th ReadyForQuery."""
    return [(t.decode(), body) for t, body in pgwire.read_until_ready(s, n)]


def types(msgs):
    return "".join(t for t, _ in msgs)


def err(msgs):
    for t, body in msgs:
        if t == "E":
            return pgwire.error_fields(body)
    return None


def rows(msgs):
    return pgwire.data_rows([(t.encode(), b) for t, b in msgs])


def one_pool(bouncer_factory, **settings):
    s = {"default_pool_size": "1"}
    s.update(settings)
    return bouncer_factory(settings=s)


def test_named_statement_follows_the_client(bouncer_factory):
    """Two clients on a pool of one, each with its own statement named S1,
    interleaved transaction by transaction: each always gets its own."""
    b = one_pool(bouncer_factory)
    a, _ = pgwire.login(b)
    c, _ = pgwire.login(b)
    a.sendall(P("S1", "SELECT 'a' || $1::text") + S)
    assert types(answers(a)) == "1Z"
    c.sendall(P("S1", "SELECT 'c' || $1::text") + S)
    assert types(answers(c)) == "1Z"
    for i in range(20):
        for s, who in ((a, "a"), (c, "c")):
            s.sendall(B("S1", [str(i)]) + E + S)
            got = answers(s)
            assert types(got) == "2DCZ", got
            assert rows(got) == [who + str(i)]
    st = b.admin("SHOW STATS_TOTALS")[0]
    assert st["client_parse_count"] == 2 and st["bind_count"] == 40


def test_same_text_is_shared_and_parse_answered_in_order(bouncer_factory):
    """A Parse of a text the server connection already has is answered by
    pgtenant itself, in its place among the server's answers."""
    b = one_pool(bouncer_factory)
    a, _ = pgwire.login(b)
    c, _ = pgwire.login(b)
    a.sendall(P("x", "SELECT 41 + 1") + B("x") + E + S)
    assert types(answers(a)) == "12DCZ"
    before = b.admin("SHOW STATS_TOTALS")[0]["server_parse_count"]
    # pipelined behind a Bind/Execute of the unnamed statement: the made-up
    # ParseComplete must come after their answers and before the Bind's
    c.sendall(P("", "SELECT 1") + B("") + E + P("y", "SELECT 41 + 1") + B("y") + E + S)
    got = answers(c)
    assert types(got) == "12DC12DCZ", got
    assert rows(got) == ["1", "42"]
    after = b.admin("SHOW STATS_TOTALS")[0]["server_parse_count"]
    assert after - before == 1  # only the unnamed one reached the server
    mem = {r["name"]: r for r in b.admin("SHOW MEM")}
    assert mem["prepared_statement"]["used"] == 1  # one text kept for both clients


def test_failed_parse_in_pipeline_leaves_nothing(bouncer_factory):
    b = one_pool(bouncer_factory)
    s, _ = pgwire.login(b)
    s.sendall(P("bad", "SELEC oops") + B("bad") + E + S)
    got = answers(s)
    assert types(got) == "EZ" and err(got)["C"] == "42601"
    # nothing registered: the name is free, and binding it fails as on PostgreSQL
    s.sendall(B("bad") + E + S)
    got = answers(s)
    assert err(got)["C"] == "26000" and '"bad"' in err(got)["M"]
    s.sendall(P("bad", "SELECT 7") + B("bad") + E + S)
    assert rows(answers(s)) == ["7"]
    # an error before a Parse in the same batch: the Parse was skipped
    s.sendall(B("nosuch") + E + P("later", "SELECT 8") + S)
    got = answers(s)
    assert types(got) == "EZ"
    s.sendall(B("later") + E + S)
    assert err(answers(s))["C"] == "26000"


def test_duplicate_name_and_close(bouncer_factory):
    b = one_pool(bouncer_factory)
    s, _ = pgwire.login(b)
    s.sendall(P("d", "SELECT 1") + S)
    assert types(answers(s)) == "1Z"
    s.sendall(P("d", "SELECT 2") + B("d") + E + S)
    got = answers(s)
    assert types(got) == "EZ", got
    e = err(got)
    assert e["C"] == "42P05" and e["M"] == 'prepared statement "d" already exists'
    s.sendall(B("d") + E + S)
    assert rows(answers(s)) == ["1"]
    # Close answers CloseComplete, also for a name that does not exist
    s.sendall(C(b"S", "d") + C(b"S", "never") + S)
    assert types(answers(s)) == "33Z"
    s.sendall(B("d") + E + S)
    assert err(answers(s))["C"] == "26000"
    # a Close skipped after an error did not happen
    s.sendall(P("k", "SELECT 3") + S)
    answers(s)
    s.sendall(B("nosuch") + E + C(b"S", "k") + S)
    assert types(answers(s)) == "EZ"
    s.sendall(B("k") + E + S)
    assert rows(answers(s)) == ["3"]


def test_describe_statement_and_flush(bouncer_factory):
    b = one_pool(bouncer_factory)
    a, _ = pgwire.login(b)
    c, _ = pgwire.login(b)
    a.sendall(P("q", "SELECT $1::int + 1", [23]) + D(b"S", "q") + S)
    assert types(answers(a)) == "1tTZ"
    c.sendall(P("q2", "SELECT 5") + S)  # take the connection in between
    answers(c)
    # Flush instead of Sync: the made-up answer must come without waiting
    a.sendall(P("q3", "SELECT 5") + H)
    t, _ = pgwire.recv_msg(a)
    assert t == b"1"
    a.sendall(D(b"S", "q") + B("q", ["1"]) + E + S)
    got = answers(a)
    assert types(got) == "tT2DCZ" and rows(got) == ["2"]


def test_pgtenant_names_are_not_the_clients(bouncer_factory):
    """A client cannot use the statements pgtenant prepared for others by
    guessing their names."""
    b = one_pool(bouncer_factory)
    a, _ = pgwire.login(b)
    a.sendall(P("mine", "SELECT 'secret'") + B("mine") + E + S)
    assert rows(answers(a)) == ["secret"]
    names = pgwire.data_rows(pgwire.query(a, "SELECT name FROM pg_prepared_statements"))
    c, _ = pgwire.login(b)
    for n in names + ["_pgtenant_1"]:
        c.sendall(B(n) + E + S)
        got = answers(c)
        assert err(got)["C"] == "26000", got
        c.sendall(D(b"S", n) + S)
        assert err(answers(c))["C"] == "26000"


def test_lru_eviction(bouncer_factory, pg):
    b = one_pool(bouncer_factory, max_prepared_statements="5")
    clients = [pgwire.login(b)[0] for _ in range(3)]
    for i in range(50):
        for k, s in enumerate(clients):
            s.sendall(P("s%d" % i, "SELECT %d + %d" % (i, k)) + B("s%d" % i) + E + S)
            assert rows(answers(s)) == [str(i + k)]
    # every statement still works, though the server holds at most 5
    for i in range(0, 50, 7):
        for k, s in enumerate(clients):
            s.sendall(B("s%d" % i) + E + S)
            assert rows(answers(s)) == [str(i + k)]
            n = pgwire.data_rows(pgwire.query(s, "SELECT count(*) FROM pg_prepared_statements"))
            assert int(n[0]) <= 5


def test_deallocate_all_and_discard_all(bouncer_factory):
    b = one_pool(bouncer_factory)
    s, _ = pgwire.login(b)
    for cmd in ("DEALLOCATE ALL", "DISCARD ALL"):
        s.sendall(P("z", "SELECT 1") + S)
        assert types(answers(s)) == "1Z"
        pgwire.result(pgwire.query(s, cmd))
        s.sendall(B("z") + E + S)
        assert err(answers(s))["C"] == "26000"
        s.sendall(P("z", "SELECT 2") + B("z") + E + S)
        assert rows(answers(s)) == ["2"]
        s.sendall(C(b"S", "z") + S)
        answers(s)


def test_sql_deallocate_of_pgtenant_name_does_not_break_others(bouncer_factory):
    b = one_pool(bouncer_factory)
    a, _ = pgwire.login(b)
    a.sendall(P("v", "SELECT 'v'") + B("v") + E + S)
    assert rows(answers(a)) == ["v"]
    names = pgwire.data_rows(pgwire.query(a, "SELECT name FROM pg_prepared_statements"))
    c, _ = pgwire.login(b)
    for n in names:
        pgwire.query(c, 'DEALLOCATE "%s"' % n)
    # a's statement may fail once at most, then the connection is replaced
    a.sendall(B("v") + E + S)
    answers(a)
    a.sendall(B("v") + E + S)
    assert rows(answers(a)) == ["v"]


def test_cross_tenant_statements_invisible(bouncer_factory, pg):
    b = tenant_bouncer(bouncer_factory, pg, size=1)
    a, _ = pgwire.login(b, user="app.acme")
    g, _ = pgwire.login(b, user="app.globex")
    a.sendall(P("acme_only", "SELECT who FROM t WHERE id = 1") + B("acme_only") + E + S)
    assert rows(answers(a)) == ["acme"]
    got = pgwire.data_rows(pgwire.query(g, "SELECT statement FROM pg_prepared_statements"))
    assert not any("who FROM t" in x for x in got)
    g.sendall(B("acme_only") + E + S)
    assert err(answers(g))["C"] == "26000"
    pgwire.query(a, "SET search_path = tenant_globex")  # lasts for its transaction at most
    a.sendall(B("acme_only") + E + S)
    assert rows(answers(a)) == ["acme"]


def test_kept_statements_and_a_clean_hand_over(bouncer_factory, pg):
    """Transactions that use several named statements keep them on the
    server over the hand-over reset (server parses stay below client
    parses), and the reset that keeps them still leaves nothing else of the
    previous client: settings, role, temp tables, SQL-prepared statements
    (also made inside a function), cursors, LISTEN, advisory locks."""
    pg.sql("DROP ROLE IF EXISTS p5_other; CREATE ROLE p5_other; GRANT p5_other TO app")
    # without pinning, so that the state a leaves goes to the next client
    # and only the reset stands in between
    b = one_pool(bouncer_factory, transaction_pinning="off")
    a, _ = pgwire.login(b)
    c, _ = pgwire.login(b)
    stmts = ["SELECT %d" % i for i in range(4)]
    for s in (a, c):
        s.sendall(b"".join(P("k%d" % i, q) for i, q in enumerate(stmts)) + S)
        assert types(answers(s)) == "1111Z"
    for rnd in range(15):
        for s in (a, c):
            s.sendall(b"".join(B("k%d" % i) + E for i in range(4)) + S)
            assert rows(answers(s)) == ["0", "1", "2", "3"]
    st = b.admin("SHOW STATS_TOTALS")[0]
    assert st["client_parse_count"] == 8
    assert st["server_parse_count"] < st["client_parse_count"], st
    # a leaves session state behind, in ways no text scan could see
    pgwire.result(pgwire.query(
        a, "SET statement_timeout = '7s'; SET ROLE p5_other; RESET ROLE; SET application_name = 'left';"
           "CREATE TEMP TABLE left_behind(x int); PREPARE sqlprep AS SELECT 1;"
           "DO $$BEGIN EXECUTE 'PREPARE fromdo AS SELECT 2'; END$$;"
           "BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT 1; COMMIT;"
           "LISTEN chan; SELECT pg_advisory_lock(4242)"))
    a.sendall(B("k1") + E + S)
    assert rows(answers(a)) == ["1"]
    before = b.admin("SHOW STATS_TOTALS")[0]["server_parse_count"]
    got = pgwire.result(pgwire.query(
        c, "SELECT current_setting('statement_timeout'), current_setting('application_name'),"
           " (SELECT count(*) FROM pg_class WHERE relname = 'left_behind'),"
           " (SELECT string_agg(name, ',') FROM pg_prepared_statements WHERE name NOT LIKE '\\_pgtenant\\_%'),"
           " (SELECT count(*) FROM pg_cursors), (SELECT count(*) FROM pg_listening_channels()),"
           " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"))
    assert got[1] == [["0", "", "0", None, "0", "0", "0"]], got
    c.sendall(b"".join(B("k%d" % i) + E for i in range(4)) + S)
    assert rows(answers(c)) == ["0", "1", "2", "3"]
    assert b.admin("SHOW STATS_TOTALS")[0]["server_parse_count"] == before  # kept over the reset


def test_sql_deallocate_of_a_protocol_statement(bouncer_factory):
    """DEALLOCATE name (psycopg evicts its cache so, through the extended
    protocol) forgets the client's statement and answers as PostgreSQL."""
    b = one_pool(bouncer_factory)
    s, _ = pgwire.login(b)
    s.sendall(P("_pg3_0", "SELECT 1") + S)
    answers(s)
    got = pgwire.query(s, 'DEALLOCATE "_pg3_0"')
    assert [t for t, _ in got] == [b"C", b"Z"] and got[0][1] == b"DEALLOCATE\0"
    s.sendall(B("_pg3_0") + E + S)
    assert err(answers(s))["C"] == "26000"
    s.sendall(P("x1", "SELECT 2") + S)
    answers(s)
    s.sendall(P("", "deallocate prepare X1;") + B("") + E + S)
    got = answers(s)
    assert types(got) == "12CZ" and got[2][1] == b"DEALLOCATE\0", got
    s.sendall(B("x1") + E + S)
    assert err(answers(s))["C"] == "26000"
    # a name pgtenant does not know goes to the server as it is
    assert err([(t.decode(), b) for t, b in pgwire.query(s, "DEALLOCATE nosuch")])["C"] == "26000"


def test_psycopg_cache_rotation(bouncer_factory):
    """psycopg with a small statement cache prepares and deallocates all the
    time; with pool_size 1 and other clients interleaving."""
    b = one_pool(bouncer_factory, max_prepared_statements="5")
    errors = []

    def worker(k):
        try:
            with psycopg.connect(b.dsn(), autocommit=True, prepare_threshold=0) as conn:
                conn.prepared_max = 4
                for i in range(150):
                    v = conn.execute("SELECT %%s::int + %d" % (i % 13), (k,)).fetchone()[0]
                    assert v == k + i % 13
        except Exception as e:  # noqa
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:3]


def test_statements_larger_than_the_buffer(bouncer_factory):
    """A named statement is kept whole however long (pkt_buf is 8 kB); the
    unnamed one streams through as before."""
    b = one_pool(bouncer_factory)
    a, _ = pgwire.login(b)
    c, _ = pgwire.login(b)
    big = "SELECT length('" + "x" * 200000 + "' || $1::text)"
    a.sendall(P("big", big) + B("big", ["yz"]) + E + S)
    assert rows(answers(a)) == ["200002"]
    c.sendall(P("", big) + B("", ["y"]) + E + S)  # takes the connection, streams
    assert rows(answers(c)) == ["200001"]
    c.sendall(P("big2", big) + B("big2", ["abc"]) + E + S)  # same text: shared
    assert rows(answers(c)) == ["200003"]
    a.sendall(B("big", ["z"]) + E + S)
    assert rows(answers(a)) == ["200001"]


def test_malformed_extended_messages(bouncer_factory):
    """Messages that lie about their contents get PostgreSQL's error (or a
    protocol violation), never a crash or another client's trouble."""
    b = one_pool(bouncer_factory)
    other, _ = pgwire.login(b)
    cases = [
        msg(b"B", b"no terminators"),
        msg(b"D", b"X" + b"name\0"),
        msg(b"C", b"S"),
        msg(b"P", b"n\0SELECT 1\0" + struct.pack("!H", 5)),  # five types announced, none given
        msg(b"P", b"n2\0SELECT 1"),  # no terminator
        msg(b"D", b"S"),
    ]
    for bad in cases:
        s, _ = pgwire.login(b)
        s.sendall(bad + S)
        try:
            got = answers(s)
            assert err(got) is not None, (bad, got)
        except (EOFError, ConnectionError):
            pass  # closed with a protocol violation: fine too
        s.close()
        other.sendall(P("ok", "SELECT 1") + B("ok") + E + S if bad is cases[0] else B("ok") + E + S)
        assert rows(answers(other)) == ["1"]


def test_error_before_the_rest_of_the_pipeline_arrives(bouncer_factory):
    """The server skips to the Sync whatever arrives after its error: also
    messages pgtenant sees only after it has passed the error on."""
    b = one_pool(bouncer_factory)
    s, _ = pgwire.login(b)
    s.sendall(P("n1", "SELECT $1::int") + S)
    answers(s)
    s.sendall(P("", "SELECT 1/($1::int - $2::int)") + B("", ["1", "1"]) + E + H)
    t, _ = pgwire.recv_msg(s)
    assert t == b"1"
    t, body = pgwire.recv_msg(s)
    assert t == b"E" and pgwire.error_fields(body)["C"] == "22012"
    # these come after the error: the server ignores them
    s.sendall(B("n1", ["5"]) + E + P("late", "SELECT 2") + C(b"S", "n1") + S)
    assert types(answers(s)) == "Z"
    s.sendall(B("n1", ["6"]) + E + S)
    assert rows(answers(s)) == ["6"]  # the skipped Close did not happen
    s.sendall(B("late") + E + S)
    assert err(answers(s))["C"] == "26000"  # nor the skipped Parse


# ---- differential: random extended-protocol traffic, pgtenant vs PostgreSQL ----

TEXTS = [("SELECT 1", 0), ("SELECT $1::int + 1", 1), ("SELECT 10 / $1::int", 1), ("SELEC 1", 0),
         ("SELECT 2", 0), ("SELECT 1", 0), ("SELECT * FROM no_such_table", 0)]


def random_batch(rnd, names):
    """Messages ending with a Sync.  The unnamed statement is only used
    after its Parse in the same batch: across transactions it is not kept
    (a new server connection has none)."""
    out = []
    unnamed = False
    if rnd.random() < 0.3:
        # Queries first: without names they pass uncounted until the rest
        # of the batch makes the order matter
        out += [msg(b"Q", b"SELECT 7\0")] * rnd.randint(1, 3)
    for _ in range(rnd.randint(1, 7)):
        k = rnd.random()
        name = rnd.choice(names)
        if name == "" and not unnamed and 0.25 <= k < 0.75:
            name = rnd.choice(names[1:])
        if k < 0.25:
            unnamed |= name == ""
            text, _ = rnd.choice(TEXTS)
            out.append(P(name, text))
        elif k < 0.55:
            nparams = rnd.choice([0, 1, 1])
            out.append(B(name, [str(rnd.choice([0, 1, 2, 5]))] * nparams))
            if rnd.random() < 0.5:
                out.append(D(b"P", ""))
            out.append(E)
        elif k < 0.65:
            out.append(D(b"S", name))
        elif k < 0.75:
            out.append(C(b"S", name))
        elif k < 0.82:
            out.append(H)
        elif k < 0.9:
            out.append(S)
            unnamed = False
        else:
            unnamed = False
            q = rnd.random()
            out.append(msg(b"Q", b"SELECT 7\0") if q < 0.6 else
                       msg(b"Q", b"DEALLOCATE ALL\0") if q < 0.7 else
                       msg(b"Q", ("DEALLOCATE %s\0" % (name or "nosuch")).encode()))
    out.append(S)
    return out


def run_batch(sock, batch):
    # a Query inside a batch after an error is skipped like the rest: read
    # up to a sentinel query's answer instead of counting ReadyForQuery
    sock.sendall(b"".join(batch) + msg(b"Q", b"SELECT 'end-of-batch'\0"))
    msgs = []
    while True:
        t, body = pgwire.recv_msg(sock)
        msgs.append((t, body))
        if t == b"D" and b"end-of-batch" in body:
            msgs.append(pgwire.recv_msg(sock))  # CommandComplete
            msgs.append(pgwire.recv_msg(sock))  # ReadyForQuery
            break
    got = []
    for t, body in msgs:
        if t == b"E":
            got.append(("E", pgwire.error_fields(body)["C"]))
        elif t in (b"S", b"N", b"K"):
            continue
        elif t == b"D":
            got.append(("D", body))
        elif t == b"C":
            got.append(("C", body))
        else:
            got.append((t.decode(), b""))
    return got


@pytest.mark.parametrize("seed", range(int(os.environ.get("PGT_PS_SEEDS", "8"))))
def test_random_pipelines_answer_as_postgresql(bouncer_factory, pg, seed):
    """Random mixes of Parse/Bind/Describe/Execute/Close/Flush/Sync/Query
    on a few statement names, from two clients sharing one server
    connection (a hand-over between nearly every batch, LRU at 3): every
    answer, message by message, as two direct PostgreSQL connections give."""
    import random
    rnd = random.Random(seed)
    b = one_pool(bouncer_factory, max_prepared_statements="3")
    names = ["", "s0", "s1", "s2", "s3"]
    direct = []
    for _ in range(2):
        d = pgwire.connect(types_of_port(pg.port))
        d.sendall(pgwire.startup_packet({"user": "postgres", "database": "appdb"}))
        while pgwire.recv_msg(d)[0] != b"Z":
            pass
        direct.append(d)
    pooled = [pgwire.login(b)[0] for _ in range(2)]
    for i in range(80):
        k = i % 2
        batch = random_batch(rnd, names)
        want = run_batch(direct[k], batch)
        got = run_batch(pooled[k], batch)
        assert got == want, (i, k, batch, want, got)


class types_of_port:
    def __init__(self, port):
        self.port = port


def test_reload_to_a_smaller_max_prepared_statements(bouncer_factory):
    b = one_pool(bouncer_factory)
    s, _ = pgwire.login(b)
    s.sendall(b"".join(P("r%d" % i, "SELECT %d" % i) for i in range(30)) + S)
    assert types(answers(s)) == "1" * 30 + "Z"
    b.reload(max_prepared_statements="2")
    for rnd in range(3):
        for i in range(30):
            s.sendall(B("r%d" % i) + E + S)
            assert rows(answers(s)) == [str(i)]
    n = int(pgwire.data_rows(pgwire.query(s, "SELECT count(*) FROM pg_prepared_statements"))[0])
    assert n <= 2


def test_back_on_its_own_connection_keeps_statements(bouncer_factory):
    """A client that finds its last connection idle and unused since gets
    it back without a reset (server.c's affinity): its statement is parsed
    on the server once, however many transactions use it, even though one
    use per transaction would otherwise have the reset discard it.  A
    second client on another connection of the pool does the same."""
    b = one_pool(bouncer_factory, default_pool_size="2")
    a, _ = pgwire.login(b)
    c, _ = pgwire.login(b)
    for s in (a, c):  # at once: the pool opens its second connection
        pgwire.result(pgwire.query(s, "BEGIN"))
    for s in (a, c):
        s.sendall(P("q", "SELECT $1::int * 2", [23]) + S)
        assert types(answers(s)) == "1Z"
        pgwire.result(pgwire.query(s, "COMMIT"))
    before = None
    for i in range(30):
        if i == 5:  # both have a connection of their own by now
            before = b.admin("SHOW STATS_TOTALS")[0]["server_parse_count"]
        for s in (a, c):
            s.sendall(B("q", [str(i)]) + E + S)
            assert rows(answers(s)) == [str(2 * i)]
    st = b.admin("SHOW STATS_TOTALS")[0]
    assert st["client_parse_count"] == 2 and st["server_parse_count"] == before <= 4, (before, st)
    assert sum(int(r["prepared_statements"]) for r in b.admin("SHOW SERVERS")) == 2


def test_eviction_skipped_in_an_earlier_pipelined_segment(bouncer_factory):
    """An error skips the Close of a statement evicted later in its Sync
    segment; a second segment sent before any answer that uses the
    statement again must not clash with the copy the server still has."""
    b = one_pool(bouncer_factory, max_prepared_statements="1")
    s, _ = pgwire.login(b)
    s.sendall(P("a", "SELECT 'a' || $1::text") + S)
    assert types(answers(s)) == "1Z"
    for i in range(3):
        s.sendall(P("", "SELECT 1 / (g - 1) FROM generate_series(1, 1) g") + B("") + E +
                  P("b%d" % i, "SELECT 'b%d'" % i) + S +
                  B("a", [str(i)]) + E + S)
        got = answers(s, 2)
        assert types(got) == "12EZ2DCZ", got
        assert err(got)["C"] == "22012" and rows(got) == ["a%d" % i]
        s.sendall(B("b%d" % i) + E + S)  # never prepared: its Parse was skipped
        assert err(answers(s))["C"] == "26000"
    s.sendall(B("a", ["z"]) + E + S)
    assert rows(answers(s)) == ["az"]
    assert [r["close_needed"] for r in b.admin("SHOW SERVERS")] == [0]


def test_eviction_skipped_and_prepared_again_in_one_segment(bouncer_factory):
    """An error skips, in one Sync segment, both the Close of an evicted
    statement and its preparing again behind it: the server still has it,
    and its next use must not be prepared once more (42P05)."""
    b = one_pool(bouncer_factory, max_prepared_statements="1")
    s, _ = pgwire.login(b)
    s.sendall(P("a", "SELECT 'a' || $1::text") + S)
    assert types(answers(s)) == "1Z"
    for i in range(3):
        # b evicts a, then a's Bind brings it back: all skipped after the error
        s.sendall(P("", "SELECT 1 / (g - 1) FROM generate_series(1, 1) g") + B("") + E +
                  P("b%d" % i, "SELECT 'b%d'" % i) + B("a", ["x"]) + E + S)
        got = answers(s)
        assert types(got) == "12EZ", got
        assert err(got)["C"] == "22012"
        s.sendall(B("a", [str(i)]) + E + S)
        got = answers(s)
        assert types(got) == "2DCZ", got
        assert rows(got) == ["a%d" % i]
    assert [r["close_needed"] for r in b.admin("SHOW SERVERS")] == [0]


def test_query_skipped_after_an_error_keeps_the_connection_out_of_the_pool(bouncer_factory, pg):
    """An error in the extended protocol makes PostgreSQL skip everything up
    to the next Sync, a Query too.  A client that sends a Query there, and
    then no Sync, leaves a server still waiting for one: it is not between
    transactions.  Its own next Sync answers as PostgreSQL does, and when it
    goes away instead, the next client (pool of one) is still served."""
    Q = lambda sql: msg(b"Q", sql.encode() + b"\0")
    bad = P("", "SELEC 1") + Q("SELECT 1")

    def error_then_nothing(s):
        t, body = recv_msg(s)
        s.settimeout(0.3)
        try:
            more = s.recv(1)  # the Query gets no answer at all
        except socket.timeout:
            more = b""
        s.settimeout(10)
        return t.decode() + more.decode()

    def script(s):
        s.sendall(bad)
        first = error_then_nothing(s)
        s.sendall(S)
        second = answers(s)
        s.sendall(Q("SELECT 42"))
        return first + "|" + types(second) + "|" + types(answers(s))

    direct, _ = pgwire.login(pg, user="trustuser")
    want = script(direct)
    assert want == "E|Z|TDCZ", want
    b = one_pool(bouncer_factory)
    a, _ = pgwire.login(b)
    assert script(a) == want
    pid = [r["remote_pid"] for r in b.admin("SHOW SERVERS")]
    a.close()

    # the same again, and the client goes away before its Sync
    a, _ = pgwire.login(b)
    a.sendall(bad)
    assert error_then_nothing(a) == "E"
    a.close()
    c, _ = pgwire.login(b)
    c.settimeout(5)
    c.sendall(Q("SELECT 42"))
    got = answers(c)
    assert types(got) == "TDCZ" and rows(got) == ["42"], got
    # drained with a Sync of pgtenant's, not closed
    assert [r["remote_pid"] for r in b.admin("SHOW SERVERS")] == pid

    # a batch without its Sync, the client gone before the error comes back:
    # the error is answered inside pgtenant's own Sync
    a, _ = pgwire.login(b)
    a.sendall(P("", "SELEC 1") + B("") + E)
    a.close()
    c.sendall(Q("SELECT 43"))
    got = answers(c)
    assert types(got) == "TDCZ" and rows(got) == ["43"], got

    # the error and the skipped Query, the client gone before the error:
    # pgtenant sends the Sync the server then waits for, so the next client
    # does not wait for the drain to time out (10 s)
    a, _ = pgwire.login(b)
    a.sendall(bad)
    a.close()
    t0 = time.time()
    c.sendall(Q("SELECT 44"))
    got = answers(c)
    assert types(got) == "TDCZ" and rows(got) == ["44"], got
    assert time.time() - t0 < 5
