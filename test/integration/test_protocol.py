"""Protocol coverage: extended protocol and pipelines, COPY streams, large
rows, notices and notifications, errors in the middle of a pipeline."""
import subprocess
import time

import psycopg
import pytest

import pgwire

MB = 1024 * 1024


@pytest.fixture
def tx(bouncer_factory):
    return bouncer_factory(settings={"pool_mode": "transaction", "default_pool_size": "2"})


def test_extended_protocol(tx):
    with tx.connect() as conn:
        cur = conn.execute("select %s::int + %s::int, %s::text", (40, 2, "x" * 10000))
        a, b = cur.fetchone()
        assert a == 42 and b == "x" * 10000
        cur = conn.cursor(binary=True)
        cur.execute("select %s::bytea", (bytes(range(256)) * 100,))
        assert cur.fetchone()[0] == bytes(range(256)) * 100


def test_pipeline_batches(tx):
    with tx.connect() as conn:
        conn.execute("create table if not exists pipe_t(id int, v text)")
        conn.execute("truncate pipe_t")
        with conn.pipeline():
            cur = conn.cursor()
            for i in range(500):
                cur.execute("insert into pipe_t values (%s, %s)", (i, "v%d" % i))
            results = [conn.execute("select count(*) from pipe_t where id < %s", (n,)) for n in (10, 100)]
        assert [r.fetchone()[0] for r in results] == [10, 100]
        assert conn.execute("select count(*), sum(id) from pipe_t").fetchone() == (500, sum(range(500)))


def test_error_in_the_middle_of_a_pipeline(tx):
    with tx.connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("select 1")
                conn.execute("select 1/0")
                conn.execute("select 2")
        # the connection and the pool are fine afterwards
        assert conn.execute("select 3").fetchone()[0] == 3
    with tx.connect() as conn:
        assert conn.execute("select 4").fetchone()[0] == 4
    pools = [p for p in tx.admin("SHOW POOLS") if p["database"] == "appdb"]
    assert pools[0]["sv_active"] == 0


def test_error_inside_transaction_then_rollback(tx):
    with tx.connect(autocommit=False) as conn:
        conn.execute("select 1")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select * from no_such_table")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select 5").fetchone()[0] == 5


def test_large_rows(tx):
    with tx.connect() as conn:
        n = conn.execute("select length(repeat('x', 20 * 1024 * 1024))").fetchone()[0]
        assert n == 20 * MB
        row = conn.execute("select repeat('ab', 5 * 1024 * 1024)").fetchone()[0]
        assert len(row) == 10 * MB and row[:4] == "abab"
        big = "y" * (8 * MB)
        assert conn.execute("select length(%s::text)", (big,)).fetchone()[0] == 8 * MB


def test_copy_200mb_both_directions_bounded_memory(tx):
    rss_before = tx.rss_kb()
    chunk = ("%s\n" % ("z" * 1023)).encode()  # 1 KiB per row
    rows = 200 * 1024
    with tx.connect() as conn:
        conn.execute("create unlogged table if not exists copy_t(v text)")
        conn.execute("truncate copy_t")
        with conn.cursor() as cur:
            with cur.copy("COPY copy_t FROM STDIN") as cp:
                block = chunk * 256
                for _ in range(rows // 256):
                    cp.write(block)
        assert conn.execute("select count(*) from copy_t").fetchone()[0] == rows
        got = 0
        with conn.cursor() as cur:
            with cur.copy("COPY copy_t TO STDOUT") as cp:
                for data in cp:
                    got += len(data)
        assert got == rows * 1024
    peak = tx.rss_kb("VmHWM")
    # 200 MB went each way through buffers of 8 KiB: the peak stays small
    assert peak - rss_before < 16 * 1024, "pgtenant grew by %d KiB" % (peak - rss_before)


def test_copy_in_error_midway(tx):
    with tx.connect() as conn:
        conn.execute("create table if not exists copy_int(v int)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor() as cur:
                with cur.copy("COPY copy_int FROM STDIN") as cp:
                    cp.write(b"1\n2\nnot-a-number\n")
                    cp.write(b"3\n" * 100000)
        assert conn.execute("select 6").fetchone()[0] == 6


def test_psql_copy_pipeline(tx):
    """psql's \\copy, i.e. libpq's COPY, in and out, with the data checked by checksum."""
    env = {"PGPASSWORD": tx.users["app"], "PATH": "/usr/bin:/bin"}
    base = ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(tx.port), "-U", "app", "appdb"]
    subprocess.run(base + ["-c", "create table if not exists psql_copy(a int, b text); truncate psql_copy"],
                   env=env, check=True, capture_output=True)
    data = "".join("%d\tline %d\n" % (i, i) for i in range(50000))
    r = subprocess.run(base + ["-c", "\\copy psql_copy from stdin"], input=data, env=env, text=True,
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["-c", "\\copy psql_copy to stdout"], env=env, text=True, capture_output=True)
    assert r.stdout == data


def test_notices_are_forwarded(tx):
    with tx.connect() as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("do $$ begin raise notice 'hello from the server'; end $$")
        assert notices == ["hello from the server"]


def test_listen_notify_in_session_mode(bouncer_factory):
    b = bouncer_factory(settings={"pool_mode": "session"})
    with b.connect() as listener, b.connect() as sender:
        got = []
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        listener.execute("listen chan")
        sender.execute("notify chan, 'payload-1'")
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            listener.execute("select 1")  # lets libpq read the asynchronous message
            time.sleep(0.05)
        assert got == [("chan", "payload-1")]


def test_pipelined_simple_queries_in_one_packet(tx):
    """Two Query messages sent back to back before any answer (libpq cannot do
    this): the server stays linked until both ReadyForQuery have arrived."""
    s, _ = pgwire.login(tx)
    q1 = pgwire.msg(b"Q", b"select pg_backend_pid() from pg_sleep(0.1)\0")
    q2 = pgwire.msg(b"Q", b"select pg_backend_pid()\0")
    s.sendall(q1 + q2)
    pids = pgwire.data_rows(pgwire.read_until_ready(s, 2))
    assert len(pids) == 2 and pids[0] == pids[1]
    s.close()
