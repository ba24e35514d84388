"""Bad input and broken peers: a clear error or log line, nothing lost, no
effect on other clients."""
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import login_error, peak_while_running


def test_cancel_request_cancels_pg_sleep(bouncer):
    with bouncer.connect() as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        t0 = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(20)")
        assert time.time() - t0 < 5
        assert conn.execute("select 1").fetchone()[0] == 1
    assert bouncer.log_contains("cancel request forwarded") == 1


def test_cancel_with_a_wrong_key_does_nothing(bouncer):
    with bouncer.connect() as conn:
        s = pgwire.connect(bouncer)
        s.sendall(struct.pack("!IIII", 16, 80877102, 1234, 5678))
        s.close()
        assert conn.execute("select 1 from pg_sleep(0.3)").fetchone()[0] == 1


CHILD = r"""
import os, sys, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True, prepare_threshold=None)
conn.execute("begin")
conn.execute("insert into leak_t values (1)")
conn.execute("set local work_mem = '9MB'")
print("ready", flush=True)
sys.stdin.readline()
"""


def test_client_killed_mid_transaction_does_not_leak(bouncer_factory, pg):
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect() as conn:
        conn.execute("create table if not exists leak_t(x int)")
        conn.execute("truncate leak_t")
    child = subprocess.Popen([sys.executable, "-c", CHILD, b.dsn()], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.kill()
    child.wait()
    with b.connect() as conn:
        # not inside the dead client's transaction, and its insert is gone
        assert conn.execute("select count(*) from leak_t").fetchone()[0] == 0
        assert conn.execute("select now() = statement_timestamp()").fetchone()[0] is True
        assert conn.execute("show work_mem").fetchone()[0] == "4MB"
    assert b.log_contains("client went away inside a transaction") == 1


def test_client_vanishes_mid_copy(bouncer_factory):
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect() as conn:
        conn.execute("create table if not exists copy_vanish(v text)")
    s, _ = pgwire.login(b)
    s.sendall(pgwire.msg(b"Q", b"COPY copy_vanish FROM STDIN\0"))
    t, _ = pgwire.recv_msg(s)
    assert t == b"G"
    s.sendall(pgwire.msg(b"d", b"partial row\n") + b"d\0\0\x10\0half a message")
    s.close()
    time.sleep(0.3)
    with b.connect() as conn:
        assert conn.execute("select count(*) from copy_vanish").fetchone()[0] == 0


def test_server_killed_client_gets_error_and_pool_recovers(bouncer_factory, pg):
    b = bouncer_factory(settings={"pool_mode": "session"})
    conn = b.connect()
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    pg.sql("select pg_terminate_backend(%d)" % pid)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    conn.close()
    with b.connect() as conn2:
        assert conn2.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_idle_server_killed_in_transaction_mode(bouncer_factory, pg):
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        pg.sql("select pg_terminate_backend(%d)" % pid)
        time.sleep(0.3)
        # the idle server died between transactions: the client never notices
        assert conn.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_query_wait_timeout(bouncer_factory):
    b = bouncer_factory(settings={"default_pool_size": "1", "query_wait_timeout": "1"})
    holder = b.connect(autocommit=False)
    holder.execute("select 1")  # holds the only server connection in a transaction
    try:
        t0 = time.time()
        waiter = b.connect()
        with pytest.raises(psycopg.OperationalError) as e:
            waiter.execute("select 1")
        assert "query_wait_timeout" in str(e.value)
        assert 0.9 < time.time() - t0 < 3
        waiter.close()
        assert b.log_contains(r"query_wait_timeout .*\(08P01\)") == 1
    finally:
        holder.rollback()
        holder.close()
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def _concurrent_backends(b, pg, n):
    """Run n clients sleeping at once; return the most backends seen."""
    conns = [b.connect() for _ in range(n)]
    seen = peak_while_running(conns, "select pg_sleep(1.0)", pg.backends, 0.8)
    for c in conns:
        c.close()
    return seen


def test_reload_changes_pool_size(bouncer_factory, pg):
    b = bouncer_factory(settings={"default_pool_size": "1", "server_idle_timeout": "1"})
    assert _concurrent_backends(b, pg, 3) == 1
    b.reload(default_pool_size=3)
    assert b.admin("SHOW CONFIG") and [r for r in b.admin("SHOW CONFIG")
                                         if r["key"] == "default_pool_size"][0]["value"] == "3"
    assert _concurrent_backends(b, pg, 3) == 3


def test_reload_with_errors_keeps_old_config(bouncer_factory):
    b = bouncer_factory()
    with b.connect() as conn:
        b.settings["pool_mode"] = "bogus"
        b.write_config()
        b.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert b.log_contains(r"pgtenant.ini:\d+: invalid value \"bogus\" for pool_mode") == 1
        assert b.log_contains("keeping the old configuration") == 1
        assert conn.execute("select 1").fetchone()[0] == 1  # existing session untouched
    with b.connect() as conn:
        assert conn.execute("select 2").fetchone()[0] == 2


def _expect_refusal(b, payload):
    """Send payload on a fresh connection; return the ErrorResponse fields or None if just closed."""
    s = pgwire.connect(b, timeout=5)
    try:
        s.sendall(payload)
        t, body = pgwire.recv_msg(s)
        assert t == b"E", (t, body)
        return pgwire.error_fields(body)
    except (EOFError, ConnectionResetError):
        return None
    finally:
        s.close()


GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\xff\xff\xff\xff" + b"\0" * 100,                 # absurd startup length
    struct.pack("!I", 0x7FFFFFFF) + b"\0\3\0\0",         # 2 GB startup packet
    struct.pack("!I", 3),                               # length shorter than itself
    struct.pack("!II", 8, 0x00020000),                  # protocol 2.0
    struct.pack("!II", 16, 196608) + b"user\0abc",      # unterminated parameter value
    pgwire.startup_packet({"database": "appdb"}),       # no user
]


def test_garbage_is_refused_without_affecting_open_sessions(bouncer):
    with bouncer.connect() as conn:
        conn.execute("begin")
        conn.execute("create temp table keep(x int) on commit preserve rows")
        for payload in GARBAGE:
            fields = _expect_refusal(bouncer, payload)
            if fields is not None:
                assert fields["C"] == "08P01", fields
                assert fields["S"] == "FATAL"
        conn.execute("insert into keep values (42)")
        assert conn.execute("select x from keep").fetchone()[0] == 42
        conn.execute("commit")
    # absurd length inside an authenticated session
    s, _ = pgwire.login(bouncer)
    s.sendall(b"Q" + struct.pack("!I", 2))
    t, body = pgwire.recv_msg(s)
    assert t == b"E" and pgwire.error_fields(body)["C"] == "08P01"
    assert "protocol violation" in pgwire.error_fields(body)["M"]
    s.close()
    assert bouncer.log_contains("protocol violation") >= 4


def test_oversized_message_during_login(bouncer):
    s = pgwire.connect(bouncer)
    s.sendall(pgwire.startup_packet({"user": "app", "database": "appdb"}))
    t, body = pgwire.recv_msg(s)
    assert t == b"R"
    s.sendall(b"p" + struct.pack("!I", 1 << 20) + b"x" * 1000)
    t, body = pgwire.recv_msg(s)
    assert t == b"E" and pgwire.error_fields(body)["C"] == "08P01"
    s.close()


def test_ssl_and_gss_requests_answered_n(bouncer):
    for code in (80877103, 80877104):
        s = pgwire.connect(bouncer)
        s.sendall(struct.pack("!II", 8, code))
        assert s.recv(1) == b"N"
        s.close()
    # and a normal login proceeds after an SSLRequest on the same socket (psycopg sslmode=prefer)
    with psycopg.connect(bouncer.dsn(sslmode="prefer"), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_negotiate_protocol_version(bouncer):
    s, seen = pgwire.login(bouncer, extra={"_pq_.fancy_option": "on"}, version=(3 << 16) | 2)
    v = [body for t, body in seen if t == b"v"]
    assert len(v) == 1
    newest, n = struct.unpack("!II", v[0][:8])
    assert newest == 0 and n == 1 and v[0][8:] == b"_pq_.fancy_option\0"
    assert pgwire.data_rows(pgwire.query(s, "select 7")) == ["7"]
    s.close()


def test_max_client_conn(bouncer_factory):
    b = bouncer_factory(settings={"max_client_conn": "2", "auth_type": "trust"})
    c1 = b.connect("trustuser", "unixdb", password="")
    c2 = b.connect("trustuser", "unixdb", password="")
    code, msg = login_error(b, "trustuser", "unixdb", password="")
    assert code == "53300" and msg.startswith("no more connections allowed")
    c1.close()
    time.sleep(0.1)
    assert login_error(b, "trustuser", "unixdb", password="") == (None, None)
    c2.close()


def test_client_login_timeout(bouncer_factory):
    b = bouncer_factory(settings={"client_login_timeout": "0.5"})
    s = pgwire.connect(b)
    s.sendall(struct.pack("!I", 100))  # never finishes the startup packet
    t0 = time.time()
    t, body = pgwire.recv_msg(s)
    assert t == b"E" and "client_login_timeout" in pgwire.error_fields(body)["M"]
    assert time.time() - t0 < 2
    s.close()


def test_idle_transaction_timeout(bouncer_factory):
    b = bouncer_factory(settings={"idle_transaction_timeout": "0.5"})
    conn = b.connect(autocommit=False)
    conn.execute("select 1")
    time.sleep(1.2)
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("select 1")
    assert "idle_transaction_timeout" in str(e.value)
    conn.close()


def test_query_timeout(bouncer_factory):
    b = bouncer_factory(settings={"query_timeout": "0.5"})
    conn = b.connect()
    t0 = time.time()
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("select pg_sleep(10)")
    assert "query_timeout" in str(e.value) and time.time() - t0 < 3
    conn.close()
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_client_idle_timeout(bouncer_factory):
    b = bouncer_factory(settings={"client_idle_timeout": "0.5"})
    conn = b.connect()
    conn.execute("select 1")
    time.sleep(1.2)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    conn.close()
    assert b.log_contains("client_idle_timeout") == 1


def test_server_connect_timeout(bouncer_factory):
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(1)  # accepts into the backlog, never answers
    port = blackhole.getsockname()[1]
    b = bouncer_factory(settings={"server_connect_timeout": "0.5"},
                        databases={"slowdb": "host=127.0.0.1 port=%d dbname=x user=trustuser" % port})
    t0 = time.time()
    code, msg = login_error(b, "trustuser", "slowdb")
    assert code == "08006" and "server_connect_timeout" in msg
    assert time.time() - t0 < 3
    blackhole.close()


def test_server_idle_timeout_and_lifetime(bouncer_factory, pg):
    b = bouncer_factory(settings={"server_idle_timeout": "0.5"})
    with b.connect() as conn:
        conn.execute("select 1")
    assert pg.backends() == 1
    time.sleep(1.2)
    assert pg.backends() == 0
    assert b.log_contains("server_idle_timeout") == 1
    b2 = bouncer_factory(settings={"server_lifetime": "0.5", "default_pool_size": "1"})
    with b2.connect() as conn:
        p1 = conn.execute("select pg_backend_pid()").fetchone()[0]
        time.sleep(1.0)
        p2 = conn.execute("select pg_backend_pid()").fetchone()[0]
        assert p1 != p2


def test_sigint_waits_for_transactions_then_exits(bouncer_factory):
    b = bouncer_factory()
    conn = b.connect(autocommit=False)
    conn.execute("select 1")  # transaction open: a server is in use
    b.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert b.proc.poll() is None  # still waiting
    assert login_error(b)[0] == "refused"  # no new logins
    assert b.log_contains("got SIGINT") == 1
    conn.execute("select 2")
    conn.commit()
    b.proc.wait(5)
    assert b.proc.returncode == 0
    conn.close()
    b.proc = subprocess.Popen(["true"], stdout=subprocess.PIPE)  # let the fixture's stop() pass
    b.proc.wait()
    b.proc.poll = lambda: None
