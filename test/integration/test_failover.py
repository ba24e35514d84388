"""
Several hosts per database entry, target_session_attrs, load_balance_hosts,
failover and server_check_query (issue P9).

A real primary on 127.0.0.1 and a real streaming standby made with
`pg_basebackup -R` on 127.0.0.2, both on the same port.  The failover test
stops the primary (`pg_ctl stop -m immediate`), promotes the standby and
moves a name served by a real DNS server (Debian's dnsmasq, on loopback,
with a hosts file the test rewrites) from one address to the other;
pgtenant is pointed at that server with dns_nameserver.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

from conftest import PG_BIN, Bouncer, as_pg_user, free_port

NAME = "db.pgtenant.test"


def pg_ctl(*args):
    return subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "pg_ctl")] + list(args),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Node:
    def __init__(self, base, name, addr, port):
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data")
        self.addr = addr
        self.port = port
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")

    def start(self):
        r = pg_ctl("-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "start")
        assert r.returncode == 0, open(os.path.join(self.dir, "log")).read()[-2000:]

    def connect(self, dbname="appdb"):
        return psycopg.connect(host=self.dir, port=self.port, dbname=dbname, user="postgres",
                               autocommit=True)

    def sql(self, q, dbname="appdb"):
        with self.connect(dbname) as c:
            cur = c.execute(q)
            return cur.fetchall() if cur.description else None

    def in_recovery(self):
        return self.sql("SELECT pg_is_in_recovery()", "postgres")[0][0]


class Pair:
    """A primary and its streaming standby, same port, two addresses."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="pgt-ha-")
        os.chmod(self.base, 0o755)
        self.port = free_port()
        self.primary = Node(self.base, "primary", "127.0.0.1", self.port)
        self.standby = Node(self.base, "standby", "127.0.0.2", self.port)
        p = self.primary
        subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "initdb"), "-D", p.data, "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--locale=C"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(p.data, "postgresql.conf"), "a") as f:
            f.write("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"
                    "max_connections = 100\nshared_buffers = 32MB\nfsync = off\nsynchronous_commit = off\n"
                    "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
                    "log_min_messages = warning\n" % (self.port, p.dir))
        with open(os.path.join(p.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.0/8 trust\n"
                    "host replication all 127.0.0.0/8 trust\n")
        p.start()
        p.sql("CREATE DATABASE appdb", "postgres")
        for t in ("acme", "initech"):
            p.sql("CREATE SCHEMA tenant_%s; CREATE TABLE tenant_%s.t (who text, n int)" % (t, t))
            p.sql("INSERT INTO tenant_%s.t VALUES ('%s', 0)" % (t, t))
        s = self.standby
        subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "pg_basebackup"), "-D", s.data, "-R",
                                       "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                       "-X", "stream", "-c", "fast"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(s.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.2'\nunix_socket_directories = '%s'\n" % s.dir)
        s.start()
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if s.in_recovery() and s.sql("SELECT count(*) FROM tenant_acme.t")[0][0] == 1:
                    break
            except psycopg.Error:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("standby did not come up")

    def stop(self):
        for n in (self.primary, self.standby):
            pg_ctl("-D", n.data, "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def pair():
    p = Pair()
    yield p
    p.stop()


class Dnsmasq:
    """A real DNS server on loopback answering NAME from a hosts file."""

    def __init__(self, base, addr):
        self.dir = tempfile.mkdtemp(prefix="pgt-dns-", dir=base)
        os.chmod(self.dir, 0o755)
        self.hosts = os.path.join(self.dir, "hosts")
        self.port = free_port()
        self.set(addr, reload=False)
        args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--port=%d" % self.port,
                "--addn-hosts=%s" % self.hosts, "--local-ttl=0", "--cache-size=0",
                "--pid-file=%s" % os.path.join(self.dir, "pid"), "--log-facility=-"]
        if os.geteuid() == 0:
            args.append("--user=root")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        assert self.proc.poll() is None, "dnsmasq did not start"

    def set(self, addr, reload=True):
        with open(self.hosts + ".new", "w") as f:
            for a in addr.split(","):
                f.write("%s %s\n" % (a, NAME))
        os.chmod(self.hosts + ".new", 0o644)
        os.replace(self.hosts + ".new", self.hosts)
        if reload:
            self.proc.send_signal(signal.SIGHUP)  # dnsmasq reads its hosts files again

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def dnsmasq_path():
    return shutil.which("dnsmasq") or (os.path.exists("/usr/sbin/dnsmasq") and "/usr/sbin/dnsmasq")


def server_addr(conn):
    return conn.execute("SELECT host(inet_server_addr())").fetchone()[0]


_made = []


@pytest.fixture(autouse=True)
def _stop_bouncers():
    """A test that fails half-way leaves no pgtenant running."""
    yield
    while _made:
        b = _made.pop()
        if b.proc is not None:
            b.stop()


def make_bouncer(pair, tmp_path, other_pg, databases, **settings):
    d = tmp_path / ("b%d" % len(list(tmp_path.iterdir())))
    d.mkdir()
    s = {"auth_type": "trust", "default_pool_size": "4", "server_login_retry": "1",
         "tenant_required": "no"}
    s.update(settings)
    b = Bouncer(other_pg, str(d), settings=s, databases=databases)
    _made.append(b)
    return b


def test_target_session_attrs_pick_the_right_server(pair, pg, tmp_path):
    p = pair.port
    dbs = {
        "rw": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres target_session_attrs=read-write" % p,
        "rw_rev": "host=127.0.0.2,127.0.0.1 port=%d dbname=appdb user=postgres target_session_attrs=read-write" % p,
        "primary": "host=127.0.0.2,127.0.0.1 port=%d dbname=appdb user=postgres target_session_attrs=primary" % p,
        "ro": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres target_session_attrs=read-only" % p,
        "standby": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres target_session_attrs=standby" % p,
        "ps": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres target_session_attrs=prefer-standby" % p,
        "any": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres" % p,
        "ports": "host=127.0.0.2,127.0.0.1 port=%d,%d dbname=appdb user=postgres target_session_attrs=read-write"
                 % (p, p),
        "nobody": "host=127.0.0.2 port=%d dbname=appdb user=postgres target_session_attrs=read-write" % p,
    }
    b = make_bouncer(pair, tmp_path, pg, dbs)
    want = {"rw": "127.0.0.1", "rw_rev": "127.0.0.1", "primary": "127.0.0.1", "ro": "127.0.0.2",
            "standby": "127.0.0.2", "ps": "127.0.0.2", "any": "127.0.0.1", "ports": "127.0.0.1"}
    for db, addr in want.items():
        # several rounds: new server connections each time (a fresh
        # pgtenant pool keeps them, so open them concurrently)
        conns = [b.connect(dbname=db) for _ in range(3)]
        txs = []
        for c in conns:
            c.execute("BEGIN")
            txs.append(server_addr(c))
        for c in conns:
            c.execute("COMMIT")
            c.close()
        assert set(txs) == {addr}, (db, txs)
    # writes work on the read-write entries, and fail on the read-only one
    with b.connect(dbname="rw_rev") as c:
        c.execute("INSERT INTO tenant_acme.t VALUES ('rw', 1)")
    with b.connect(dbname="ro") as c:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("INSERT INTO tenant_acme.t VALUES ('ro', 1)")
    # no server with the role asked for: a clear 08006, no loop
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(dbname="nobody").execute("SELECT 1")
    assert "target_session_attrs=read-write" in str(e.value), str(e.value)
    servers = b.admin("SHOW SERVERS")
    nobody = [s for s in servers if s["database"] == "nobody"]
    assert nobody == [], nobody
    assert b.log_contains("no server with target_session_attrs=read-write") >= 1
    b.stop()


def test_load_balance_hosts(pair, pg, tmp_path):
    p = pair.port
    dbs = {
        "rr": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres load_balance_hosts=round-robin" % p,
        "rnd": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres load_balance_hosts=random" % p,
        "off": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres" % p,
        "readers": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres load_balance_hosts=round-robin "
                   "target_session_attrs=read-only" % p,
    }
    b = make_bouncer(pair, tmp_path, pg, dbs, default_pool_size="10")
    for db in ("rr", "rnd", "off", "readers"):
        conns = [b.connect(dbname=db) for _ in range(10)]
        addrs = []
        for c in conns:
            c.execute("BEGIN")
            addrs.append(server_addr(c))
        for c in conns:
            c.execute("COMMIT")
            c.close()
        if db == "rr":
            assert addrs.count("127.0.0.1") == 5 and addrs.count("127.0.0.2") == 5, addrs
        elif db == "rnd":
            assert set(addrs) == {"127.0.0.1", "127.0.0.2"}, addrs  # 2 in 2**10 chance to fail
        elif db == "off":
            assert set(addrs) == {"127.0.0.1"}, addrs
        else:
            assert set(addrs) == {"127.0.0.2"}, addrs
    # SHOW SERVERS tells which address each connection uses
    servers = b.admin("SHOW SERVERS")
    rr = sorted(s["addr"] for s in servers if s["database"] == "rr")
    assert rr == ["127.0.0.1"] * 5 + ["127.0.0.2"] * 5, rr
    dbrow = [d for d in b.admin("SHOW DATABASES") if d["name"] == "rr"][0]
    assert dbrow["host"] == "127.0.0.1,127.0.0.2", dbrow
    b.stop()


def test_server_check_query(pair, pg, tmp_path):
    """An idle connection older than server_check_delay is checked with
    server_check_query before reuse (a sequence counts the checks); one
    whose check fails is closed and the client gets another."""
    p = pair.port
    pair.primary.sql("CREATE SEQUENCE IF NOT EXISTS public.checks")
    dbs = {"chk": "host=127.0.0.1 port=%d dbname=appdb user=postgres" % p}
    b = make_bouncer(pair, tmp_path, pg, dbs, server_check_delay="1",
                     server_check_query="select nextval('public.checks')", default_pool_size="1")

    def checks():
        return pair.primary.sql("SELECT last_value, is_called FROM public.checks")[0]

    with b.connect(dbname="chk") as c:
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        before = checks()
        for _ in range(5):  # within the delay: no check
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid1
        assert checks() == before
        time.sleep(1.3)
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid1
        after = checks()
        assert after[1] and after != before, (before, after)
    # a check that fails: the connection is replaced, the client never sees it
    b.reload(server_check_query="select 1/0")
    with b.connect(dbname="chk") as c:
        pid2 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        time.sleep(1.3)
        pid3 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pid3 != pid2
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid3
    assert b.log_contains("server_check_query failed") >= 1
    # empty: no check
    b.reload(server_check_query="")
    with b.connect(dbname="chk") as c:
        pid4 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        time.sleep(1.3)
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid4
    b.stop()


class FakeOldServer:
    """A minimal PostgreSQL 13 stand-in: reports no in_hot_standby, answers
    pgtenant's role query with its recovery state, and every other simple
    Query with one row naming itself."""

    def __init__(self, name, in_recovery):
        import socket as _s
        self.name, self.in_recovery = name, in_recovery
        self.sock = _s.socket()
        self.sock.setsockopt(_s.SOL_SOCKET, _s.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.role_queries = 0
        self.stopped = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        import struct
        from pgwire import msg, recv_exact

        def row_reply(cols, vals):
            out = msg(b"T", struct.pack("!H", len(cols)) + b"".join(
                n.encode() + b"\0" + struct.pack("!IHIhiH", 0, 0, 25, -1, -1, 0) for n in cols))
            out += msg(b"D", struct.pack("!H", len(vals)) + b"".join(
                struct.pack("!i", len(v)) + v.encode() for v in vals))
            return out + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I")

        try:
            while True:
                (ln,) = struct.unpack("!I", recv_exact(c, 4))
                body = recv_exact(c, ln - 4)
                if struct.unpack("!I", body[:4])[0] == 80877103:  # SSLRequest
                    c.sendall(b"N")
                    continue
                break
            out = msg(b"R", struct.pack("!I", 0))
            for k, v in (("server_version", "13.11"), ("client_encoding", "UTF8"),
                         ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"),
                         ("standard_conforming_strings", "on"), ("TimeZone", "UTC")):
                out += msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
            out += msg(b"K", struct.pack("!II", 4242, 1)) + msg(b"Z", b"I")
            c.sendall(out)
            while True:
                t = recv_exact(c, 1)
                (ln,) = struct.unpack("!I", recv_exact(c, 4))
                body = recv_exact(c, ln - 4)
                if t == b"X":
                    return
                if t != b"Q":
                    continue
                q = body.rstrip(b"\0").decode()
                if "pg_is_in_recovery" in q:
                    self.role_queries += 1
                    c.sendall(row_reply(["pg_is_in_recovery", "current_setting"],
                                        ["t" if self.in_recovery else "f", "off"]))
                else:
                    c.sendall(row_reply(["who"], [self.name]))
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def test_role_query_for_servers_without_in_hot_standby(pg, tmp_path):
    """PostgreSQL 13 reports no in_hot_standby: pgtenant asks at login."""
    from pgwire import login, query, data_rows
    standby, primary = FakeOldServer("fake-standby", True), FakeOldServer("fake-primary", False)
    try:
        dbs = {
            "rw": "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=x user=postgres target_session_attrs=read-write"
                  % (standby.port, primary.port),
            "ro": "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=x user=postgres target_session_attrs=read-only"
                  % (primary.port, standby.port),
            "any": "host=127.0.0.1 port=%d dbname=x user=postgres" % standby.port,
        }
        d = tmp_path / "b"
        d.mkdir()
        b = Bouncer(pg, str(d), settings={"auth_type": "trust", "tenant_required": "no"}, databases=dbs)
        _made.append(b)
        for db, want in (("rw", "fake-primary"), ("ro", "fake-standby"), ("any", "fake-standby")):
            s, _ = login(b, user="postgres", dbname=db)
            rows = data_rows(query(s, "select who"))
            assert rows == [want], (db, rows)
            s.close()
        # asked once per new login that needed it (rw: both servers, ro: both;
        # any: never)
        assert standby.role_queries >= 2 and primary.role_queries >= 2, (standby.role_queries,
                                                                          primary.role_queries)
        b.stop()
    finally:
        standby.stop()
        primary.stop()


def test_unreachable_hosts_and_prefer_standby_fallback(pair, pg, tmp_path):
    p = pair.port
    dbs = {
        # nothing listens on 127.0.0.3: refused, the next host is tried
        "skip": "host=127.0.0.3,127.0.0.1 port=%d dbname=appdb user=postgres" % p,
        "ps": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres target_session_attrs=prefer-standby" % p,
        "ro": "host=127.0.0.1,127.0.0.2 port=%d dbname=appdb user=postgres target_session_attrs=read-only" % p,
    }
    b = make_bouncer(pair, tmp_path, pg, dbs, server_login_retry="0.2")
    with b.connect(dbname="skip") as c:
        assert server_addr(c) == "127.0.0.1"
    pg_ctl("-D", pair.standby.data, "-m", "fast", "stop")
    try:
        # prefer-standby: no standby answers, the primary will do
        with b.connect(dbname="ps") as c:
            assert server_addr(c) == "127.0.0.1"
        # read-only: no server fits, a clear error
        with pytest.raises(psycopg.OperationalError) as e:
            b.connect(dbname="ro").execute("SELECT 1")
        assert "server connection failed" in str(e.value), str(e.value)
    finally:
        pair.standby.start()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if pair.standby.in_recovery():
                break
        except psycopg.Error:
            time.sleep(0.2)
    time.sleep(0.5)
    with b.connect(dbname="ro") as c:  # back: found again
        assert server_addr(c) == "127.0.0.2"
    b.stop()


def test_reader_endpoint_spreads(pair, pg, tmp_path):
    """A name with several addresses (as a reader endpoint answers) and
    load_balance_hosts spreads server connections over them; with
    target_session_attrs=read-only only the standby gets any."""
    if not dnsmasq_path():
        pytest.skip("dnsmasq not installed (contrib/deps.sh installs dnsmasq-base)")
    dns = Dnsmasq(pair.base, "127.0.0.1,127.0.0.2")
    p = pair.port
    dbs = {
        "readers": "host=%s port=%d dbname=appdb user=postgres load_balance_hosts=round-robin" % (NAME, p),
        "ro": "host=%s port=%d dbname=appdb user=postgres load_balance_hosts=random "
              "target_session_attrs=read-only" % (NAME, p),
    }
    b = make_bouncer(pair, tmp_path, pg, dbs, dns_nameserver="127.0.0.1:%d" % dns.port,
                     default_pool_size="8")
    try:
        for db, want in (("readers", {"127.0.0.1": 4, "127.0.0.2": 4}), ("ro", {"127.0.0.2": 8})):
            conns = [b.connect(dbname=db) for _ in range(8)]
            addrs = []
            for c in conns:
                c.execute("BEGIN")
                addrs.append(server_addr(c))
            for c in conns:
                c.execute("COMMIT")
                c.close()
            assert {a: addrs.count(a) for a in set(addrs)} == want, (db, addrs)
    finally:
        dns.stop()
        b.stop()


def test_failover_dns_flip(pair, pg, tmp_path):
    if not dnsmasq_path():
        pytest.skip("dnsmasq not installed (contrib/deps.sh installs dnsmasq-base)")
    dns = Dnsmasq(pair.base, "127.0.0.1")
    p = pair.port
    dbs = {
        "appdb": "host=%s port=%d dbname=appdb user=postgres target_session_attrs=read-write" % (NAME, p),
        # another tenant's dedicated backend: not part of the failover
        "otherdb": "host=127.0.0.1 port=%d dbname=appdb user=app password=apppass" % pg.port,
    }
    b = make_bouncer(pair, tmp_path, pg, dbs, dns_nameserver="127.0.0.1:%d" % dns.port,
                     dns_max_ttl="15", query_wait_timeout="60", metrics_listen="127.0.0.1:%d" % free_port(),
                     tenant_schema="tenant_%s", unknown_tenant="allow")
    b.tenants = {"globex": "database=otherdb"}
    b.reload()
    pg.sql("CREATE SCHEMA IF NOT EXISTS tenant_globex AUTHORIZATION app", dbname="appdb")
    try:
        # clients between transactions, with session state that must survive
        idle = []
        for i in range(4):
            c = b.connect(dbname="appdb", options="-c tenant=acme")
            c.execute("SET application_name = 'keeper%d'" % i)
            assert server_addr(c) == "127.0.0.1"
            idle.append(c)
        # one client inside a transaction at the moment of the failure
        intx = b.connect(dbname="appdb", options="-c tenant=initech")
        intx.execute("BEGIN")
        intx.execute("INSERT INTO t VALUES ('intx', 1)")
        # the other tenant keeps working throughout
        stop = threading.Event()
        other_errors, other_ok = [], [0]

        def other_tenant():
            c = b.connect(dbname="otherdb", user="app", options="-c tenant=globex")
            while not stop.is_set():
                try:
                    c.execute("SELECT 1")
                    other_ok[0] += 1
                except psycopg.Error as e:
                    other_errors.append(str(e))
                time.sleep(0.02)
            c.close()

        th = threading.Thread(target=other_tenant)
        th.start()
        time.sleep(0.3)

        # the failure: primary gone, standby promoted, the name moved
        t0 = time.time()
        pg_ctl("-D", pair.primary.data, "-m", "immediate", "stop")
        # a client that starts a transaction while there is no writer waits
        # for the new one instead of failing
        waiter_result = {}

        def waiter():
            try:
                with b.connect(dbname="appdb", options="-c tenant=acme") as c:
                    c.execute("INSERT INTO t VALUES ('waiter', 2)")
                    waiter_result["addr"] = server_addr(c)
            except psycopg.Error as e:
                waiter_result["error"] = str(e)

        wt = threading.Thread(target=waiter)
        wt.start()
        time.sleep(1.0)
        r = pg_ctl("-D", pair.standby.data, "-w", "promote")
        assert r.returncode == 0
        dns.set("127.0.0.2")

        # the client inside a transaction gets an error (its server is gone)
        with pytest.raises(psycopg.Error):
            intx.execute("INSERT INTO t VALUES ('intx', 2)")
        intx.close()

        wt.join(30)
        assert waiter_result.get("addr") == "127.0.0.2", waiter_result
        # new transactions succeed on the new primary within a bounded time
        deadline = t0 + 30
        ok_at = None
        while time.time() < deadline:
            try:
                with b.connect(dbname="appdb", options="-c tenant=acme") as c:
                    c.execute("INSERT INTO t VALUES ('after', 3)")
                    assert server_addr(c) == "127.0.0.2"
                    ok_at = time.time()
                    break
            except psycopg.Error:
                time.sleep(0.2)
        assert ok_at is not None, b.log()[-3000:]
        print("failover: writes again %.2f s after the primary stopped" % (ok_at - t0))
        assert ok_at - t0 < 10, ok_at - t0
        # clients between transactions kept their sessions and never see a
        # read-only error
        for round_ in range(5):
            for i, c in enumerate(idle):
                c.execute("INSERT INTO t VALUES ('keeper', %d)" % i)
                assert c.execute("SHOW application_name").fetchone()[0] == "keeper%d" % i
                assert server_addr(c) == "127.0.0.2"
        stop.set()
        th.join()
        assert other_errors == [] and other_ok[0] > 10, (other_errors, other_ok)
        # no server connection leaked: every one pgtenant holds for appdb is on
        # the new primary and counted there
        servers = [s for s in b.admin("SHOW SERVERS") if s["database"] == "appdb"]
        assert all(s["addr"] == "127.0.0.2" for s in servers), servers
        held = pair.standby.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                "AND datname = 'appdb' AND pid <> pg_backend_pid()")[0][0]
        assert held == len(servers), (held, servers)
        assert len(servers) <= 8
        # rows: each tenant only its own
        rows = pair.standby.sql("SELECT who FROM tenant_acme.t")
        assert ("waiter",) in rows and ("after",) in rows and ("intx",) not in rows
        assert all(r[0] != "intx" for r in pair.standby.sql("SELECT who FROM tenant_initech.t"))
        # metrics count the failover and the connections per address
        import urllib.request
        text = urllib.request.urlopen("http://%s/metrics" % b.settings["metrics_listen"]).read().decode()
        fo = [l for l in text.splitlines() if l.startswith('pgtenant_failovers_total{database="appdb"}')]
        assert fo and float(fo[0].split()[-1]) >= 1, fo
        hc = [l for l in text.splitlines()
              if l.startswith('pgtenant_server_host_connections{database="appdb",addr="127.0.0.2:%d"}' % p)]
        assert hc and float(hc[0].split()[-1]) == len(servers), (hc, servers)
        assert b.log_contains("answers as the primary") >= 1
        for c in idle:
            c.close()
    finally:
        stop_ev = locals().get("stop")
        if stop_ev:
            stop_ev.set()
        dns.stop()
        b.stop()
