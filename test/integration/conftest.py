"""
Integration test harness: a real PostgreSQL started by the suite (initdb +
pg_ctl on a free port, in a temp dir) and a fresh pgtenant per test with an
inline ini, in the style of PgBouncer's test suite (bouncer.admin(),
bouncer.log_contains()).

PostgreSQL refuses to run as root; when the suite runs as root (CI) the
server runs as the `postgres` system user through runuser.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

def _pg_bin():
    """The newest installed PostgreSQL server binaries (Debian layout), or PATH."""
    import glob
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(dirs[-1]) if dirs else os.path.dirname(shutil.which("initdb") or "/usr/bin/initdb")


PG_BIN = os.environ.get("PG_BIN") or _pg_bin()
PGTENANT_BIN = os.environ.get("PGTENANT_BIN")

APP_PASSWORD = "apppass"
MD5_PASSWORD = "md5pass"
ADMIN_PASSWORD = "adminpass"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("port %d did not open" % port)


def as_pg_user():
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Postgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pgt-pg-")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.sockdir = self.dir
        subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--locale=C"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"
                    "max_connections = 400\nshared_buffers = 64MB\nfsync = off\n"
                    "synchronous_commit = off\nfull_page_writes = off\n"
                    "password_encryption = 'scram-sha-256'\nlog_min_messages = warning\n"
                    % (self.port, self.sockdir))
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all app 127.0.0.1/32 scram-sha-256\n"
                    "host all md5user 127.0.0.1/32 md5\n"
                    "host all pwuser 127.0.0.1/32 password\n"
                    "host all saslprep 127.0.0.1/32 scram-sha-256\n"
                    "host all all 127.0.0.1/32 trust\n"
                    "host replication app 127.0.0.1/32 scram-sha-256\n")
        subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l",
                                       os.path.join(self.dir, "log"), "-w", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        self.sql("CREATE USER app PASSWORD '%s' CREATEDB" % APP_PASSWORD)
        self.sql("SET password_encryption = 'md5'; CREATE USER md5user PASSWORD '%s'" % MD5_PASSWORD)
        self.sql("CREATE USER trustuser")
        self.sql("CREATE USER pwuser PASSWORD 'pwpass'")
        self.sql("CREATE DATABASE appdb OWNER app")
        self.sql("GRANT ALL ON SCHEMA public TO PUBLIC", dbname="appdb")

    def connect(self, dbname="postgres", user="postgres", **kw):
        return psycopg.connect(host=self.sockdir, port=self.port, dbname=dbname, user=user,
                               autocommit=True, **kw)

    def sql(self, query, dbname="postgres"):
        with self.connect(dbname) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None

    def backends(self, user="app", dbname="appdb"):
        rows = self.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND datname = '%s' "
                        "AND backend_type = 'client backend'" % (user, dbname))
        return rows[0][0]

    def stop(self):
        subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate",
                                       "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    server = Postgres()
    yield server
    server.stop()


class Bouncer:
    """One pgtenant process with an inline ini."""

    def __init__(self, pg, tmpdir, settings=None, databases=None, users=None, tenants=None, start=True,
                 env=None):
        self.pg = pg
        # the process environment: os.environ with these set (None = removed)
        self.env = dict(env or {})
        self.dir = tmpdir
        self.port = free_port()
        self.ini = os.path.join(tmpdir, "pgtenant.ini")
        self.logfile = os.path.join(tmpdir, "pgtenant.log")
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": os.path.join(tmpdir, "userlist.txt"),
            "admin_users": "admin",
            "stats_users": "monitor",
            "pool_mode": "transaction",
            "default_pool_size": "5",
            "server_login_retry": "1",
            "tenant_required": "no",
            "logfile": self.logfile,
        }
        self.settings.update(settings or {})
        self.databases = {
            "appdb": "host=127.0.0.1 port=%d dbname=appdb user=app password=%s" % (pg.port, APP_PASSWORD),
            "md5db": "host=127.0.0.1 port=%d dbname=appdb user=md5user" % pg.port,
            "unixdb": "host=%s port=%d dbname=appdb user=trustuser" % (pg.sockdir, pg.port),
            "deaddb": "host=127.0.0.1 port=1 dbname=appdb user=trustuser",
            "pwdb": "host=127.0.0.1 port=%d dbname=appdb user=pwuser" % pg.port,
            "namedb": "host=localhost port=%d dbname=appdb user=trustuser" % pg.port,
        }
        self.databases.update(databases or {})
        self.users = {"app": APP_PASSWORD, "md5user": MD5_PASSWORD, "admin": ADMIN_PASSWORD,
                      "monitor": "monitorpass", "trustuser": "trustpass", "pwuser": "pwpass"}
        self.users.update(users or {})
        self.tenants = dict(tenants or {})
        self.proc = None
        self.write_config()
        if start:
            self.start()

    def write_config(self):
        with open(os.path.join(self.dir, "userlist.txt"), "w", encoding="utf-8") as f:
            for u, p in self.users.items():
                f.write('"%s" "%s"\n' % (u, p))
        with open(self.ini, "w", encoding="utf-8") as f:
            f.write("[databases]\n")
            for k, v in self.databases.items():
                f.write("%s = %s\n" % (k, v))
            f.write("[pgtenant]\n")
            for k, v in self.settings.items():
                f.write("%s = %s\n" % (k, v))
            f.write("[tenants]\n")
            for k, v in self.tenants.items():
                f.write("%s = %s\n" % (k, v))

    def start(self, *extra, preexec_fn=None):
        env = dict(os.environ)
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        self.proc = subprocess.Popen([PGTENANT_BIN, "-v"] + list(extra) + [self.ini],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
                                     env=env)
        wait_port(self.port, proc=self.proc)

    def reload(self, tenants=None, **settings):
        if tenants is not None:
            self.tenants = dict(tenants)
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while time.time() < deadline:
            if self.log_contains("configuration reloaded") >= self.reloads + 1:
                break
            time.sleep(0.05)
        self.reloads += 1

    reloads = 0

    def dsn(self, user="app", dbname="appdb", password=None, **kw):
        if password is None:
            password = self.users.get(user, "")
        parts = {"host": "127.0.0.1", "port": str(self.port), "user": user, "dbname": dbname,
                 "password": password, "connect_timeout": "10"}
        parts.update({k: str(v) for k, v in kw.items()})
        return " ".join("%s='%s'" % (k, str(v).replace("'", "\\'")) for k, v in parts.items())

    def connect(self, user="app", dbname="appdb", autocommit=True, **kw):
        # prepare_threshold=None: no named prepared statements across transactions
        return psycopg.connect(self.dsn(user, dbname, **kw), autocommit=autocommit, prepare_threshold=None)

    def admin(self, query, user="admin"):
        with psycopg.connect(self.dsn(user, "pgtenant"), autocommit=True) as conn:
            cur = conn.execute(query, prepare=False)
            if cur.description is None:
                return None
            cols = [d.name for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_contains(self, pattern):
        return len(re.findall(pattern, self.log()))

    def cpu_seconds(self):
        """User + system CPU time the process has used so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self, field="VmRSS"):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc is None:
            return
        alive = self.proc.poll() is None
        if alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
        self.proc.stdout.close()
        self.proc = None
        log = self.log()
        assert alive, "pgtenant died during the test:\n%s\n%s" % (out[-4000:], log[-4000:])
        assert "AddressSanitizer" not in out + log and "runtime error" not in out + log, out + log[-4000:]


@pytest.fixture
def bouncer_factory(pg, tmp_path):
    made = []

    def make(**kw):
        d = tmp_path / ("b%d" % len(made))
        d.mkdir()
        b = Bouncer(pg, str(d), **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def bouncer(bouncer_factory):
    return bouncer_factory()


def login_error(b, user="app", dbname="appdb", password=None, server_settings=None):
    """Try to log in with asyncpg (which reports the SQLSTATE of a refused
    login, unlike libpq); return (sqlstate, message) or (None, None)."""
    import asyncio

    import asyncpg

    async def attempt():
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=b.port, user=user, database=dbname,
                                         password=b.users.get(user, "") if password is None else password,
                                         server_settings=server_settings or {}, statement_cache_size=0,
                                         ssl=False, timeout=10)
        except asyncpg.PostgresError as e:
            return e.sqlstate, str(e)
        except OSError as e:
            return "refused", str(e)
        try:
            await conn.fetchval("select 1")
        except asyncpg.PostgresError as e:
            return e.sqlstate, str(e)
        finally:
            await conn.close()
        return None, None

    return asyncio.run(attempt())


def peak_while_running(conns, sql, probe, duration, interval=0.05):
    """Run sql on every connection at once; return the highest value probe()
    returned during the first `duration` seconds."""
    threads = [threading.Thread(target=c.execute, args=(sql,)) for c in conns]
    for t in threads:
        t.start()
    seen = 0
    deadline = time.time() + duration
    while time.time() < deadline:
        seen = max(seen, probe())
        time.sleep(interval)
    for t in threads:
        t.join()
    return seen
