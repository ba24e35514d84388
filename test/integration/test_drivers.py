"""Real drivers through transaction mode (issue 9): psycopg 3 (default
prepare_threshold, prepare_threshold=0, executemany, pipeline mode), asyncpg
with its statement cache, node-postgres named queries, postgres.js with its
default `prepare: true`, pgjdbc with prepareThreshold default, 0 and -1, and
pgbench -M prepared.  Small pools, several tenants; every test asserts zero
errors, that every planned query ran, and that every row came from the
client's own tenant (each tenant schema's drv_items rows name the tenant, and
every query also reads the pinned app.tenant_id).

The node scripts, the Java program and the pinned npm package versions are in
drivers/.  The npm packages are installed once, by the first test that needs
them, into $PGTENANT_NPM_DIR (default: $XDG_CACHE_HOME/pgtenant-npm or
~/.cache/pgtenant-npm), never into the work tree.  contrib/deps.sh installs
node, npm, java and pgjdbc.

PGTENANT_DRIVERS_POOL_MODE=session runs the same tests in session mode, where
the server keeps each client's statements: a check of the harness itself.
"""
import asyncio
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import threading
import time

import asyncpg
import psycopg
import pytest

from conftest import APP_PASSWORD

POOL_MODE = os.environ.get("PGTENANT_DRIVERS_POOL_MODE", "transaction")
TENANTS = ["acme", "globex", "initech"]
ITEMS = 20
DRIVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "drivers")
# every query returns (owner, id, tenant setting) rows of the client's tenant
ONE = "select owner, id, current_setting('app.tenant_id') from drv_items where id = %s"
RANGE = ("select owner, id, current_setting('app.tenant_id') from drv_items "
         "where id between %s and %s + 2 order by id")


def one_plus(k, placeholder="%s"):
    """A distinct statement per k, whose rows say which one ran: id + k."""
    return ("select owner, id + %d, current_setting('app.tenant_id') from drv_items where id = %s"
            % (k, placeholder))
# how long a driver may take before its run counts as hung
DEADLINE = 60


@pytest.fixture(scope="module")
def schemas(pg):
    """drv_items (ids 1..ITEMS, owner = tenant) and drv_log (owner defaults to
    the tenant) in each tenant's schema; other test files' tables are left alone."""
    with pg.connect("appdb", "app") as conn:
        for t in TENANTS:
            conn.execute("create schema if not exists tenant_%s" % t)
            conn.execute("drop table if exists tenant_%s.drv_items, tenant_%s.drv_log" % (t, t))
            conn.execute("create table tenant_%s.drv_items(id int primary key, owner text not null)" % t)
            conn.execute("insert into tenant_%s.drv_items select g, '%s' from generate_series(1, %d) g"
                         % (t, t, ITEMS))
            conn.execute("create table tenant_%s.drv_log(client text not null, n int not null, "
                         "owner text not null default '%s')" % (t, t))
    return TENANTS


def driver_bouncer(factory, tenants=TENANTS, pool_size=2, settings=None):
    if POOL_MODE == "session":
        # a session-mode client keeps its server connection: room for every
        # driver connection of a test, so that none waits for another to leave
        pool_size = 64
    s = {"pool_mode": POOL_MODE, "tenant_required": "yes", "tenant_setting": "app.tenant_id",
         "tenant_pool_size": str(pool_size), "default_pool_size": str(pool_size), "query_wait_timeout": "60",
         "max_client_conn": "500"}
    s.update(settings or {})
    b = factory(settings=s, tenants={t: "pool_size=%d" % pool_size for t in tenants})
    b.pool_size = pool_size
    return b


def item_id(n, i):
    return (n * 7 + i) % ITEMS + 1


def verify(tenant, rows, first, count=1):
    """None if rows are `count` rows of ids first.. from `tenant`, else what is wrong."""
    want = [(tenant, first + k, tenant) for k in range(count)]
    return None if [tuple(r) for r in rows] == want else "wanted %r, got %r" % (want, rows)


class Tally:
    """Thread-safe count of good results, errors and foreign/wrong rows."""

    def __init__(self, expected):
        self.expected = expected
        self.ok = 0
        self.errors = []
        self.wrong = []
        self.lock = threading.Lock()

    def check(self, where, bad):
        with self.lock:
            if bad is None:
                self.ok += 1
            else:
                self.wrong.append((where, bad))

    def error(self, where, exc):
        with self.lock:
            self.errors.append((where, "%s: %s" % (type(exc).__name__, exc)))

    def assert_clean(self):
        assert not self.errors, "%d errors, first: %s" % (len(self.errors), self.errors[:5])
        assert not self.wrong, "%d wrong results, first: %s" % (len(self.wrong), self.wrong[:5])
        assert self.ok == self.expected, (self.ok, self.expected)


def run_threads(tally, target, argsets, timeout=DEADLINE):
    def guarded(*args):
        try:
            target(*args)
        except Exception as e:  # noqa: BLE001 - e.g. a commit at the end of `with conn`
            tally.error(args + ("end",), e)

    threads = [threading.Thread(target=guarded, args=a, daemon=True) for a in argsets]
    for t in threads:
        t.start()
    deadline = time.time() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.time()))
    hung = [t for t in threads if t.is_alive()]
    assert not hung, "%d of %d driver threads still running after %d s" % (len(hung), len(threads), timeout)


def tenant_dsn(b, tenant, n, **kw):
    """Half of the clients name the tenant in the user name, half in options."""
    if n % 2:
        return b.dsn("app", password=APP_PASSWORD, options="-c tenant=%s" % tenant, **kw)
    return b.dsn("app." + tenant, password=APP_PASSWORD, **kw)


# --- psycopg 3 -------------------------------------------------------------

def test_psycopg_default_settings(bouncer_factory, schemas):
    """18 threads over 3 tenants x 200 identical parameterised queries, pool_size 2
    per tenant, psycopg's defaults (prepare_threshold 5: the statement is
    prepared at its 6th run, on whichever server connection the client has
    then, and used from then on).  Half the clients run in autocommit, half in
    psycopg's default transactions, committing after each query, with two
    queries per transaction every tenth time and a rollback every 50th, after
    which psycopg sends DEALLOCATE ALL and prepares again."""
    b = driver_bouncer(bouncer_factory)
    tally = Tally(18 * 200)

    def worker(tenant, n):
        try:
            conn = psycopg.connect(tenant_dsn(b, tenant, n), autocommit=bool(n % 2))
        except Exception as e:  # noqa: BLE001 - every failure is reported
            tally.error((tenant, n, "connect"), e)
            return
        if conn.prepare_threshold != 5:
            tally.error((tenant, n, "connect"), Exception("prepare_threshold %r" % conn.prepare_threshold))
        with conn:
            for i in range(200):
                id_ = item_id(n, i)
                try:
                    if conn.autocommit:
                        tally.check((tenant, n, i), verify(tenant, conn.execute(ONE, (id_,)).fetchall(), id_))
                        continue
                    rows = conn.execute(ONE, (id_,)).fetchall()
                    bad = verify(tenant, rows, id_)
                    if i % 10 == 9:
                        first = min(id_, ITEMS - 2)
                        bad = bad or verify(tenant, conn.execute(RANGE, (first, first)).fetchall(), first, 3)
                    if i % 50 == 49:
                        conn.rollback()
                    else:
                        conn.commit()
                    tally.check((tenant, n, i), bad)
                except Exception as e:  # noqa: BLE001
                    tally.error((tenant, n, i), e)
                    if conn.closed:
                        return
                    conn.rollback()

    run_threads(tally, worker, [(t, n) for t in TENANTS for n in range(6)])
    tally.assert_clean()


def test_psycopg_prepare_threshold_0(bouncer_factory, schemas):
    """prepare_threshold=0: every query is prepared at its first run (Parse and
    Sync, then Bind/Execute/Sync in a transaction of its own); three distinct
    statements per client, 9 threads over 3 tenants."""
    b = driver_bouncer(bouncer_factory)
    tally = Tally(9 * 100)

    def worker(tenant, n):
        try:
            conn = psycopg.connect(tenant_dsn(b, tenant, n), autocommit=True, prepare_threshold=0)
        except Exception as e:  # noqa: BLE001
            tally.error((tenant, n, "connect"), e)
            return
        with conn:
            for i in range(100):
                id_ = item_id(n, i)
                try:
                    rows = conn.execute(one_plus(i % 3), (id_,)).fetchall()
                    tally.check((tenant, n, i), verify(tenant, rows, id_ + i % 3))
                except Exception as e:  # noqa: BLE001
                    tally.error((tenant, n, i), e)
                    if conn.closed:
                        return

    run_threads(tally, worker, [(t, n) for t in TENANTS for n in range(3)])
    tally.assert_clean()


def test_psycopg_executemany(bouncer_factory, schemas, pg):
    """cursor.executemany (a pipeline: Parse of a named statement the first
    time, then Bind/Describe/Execute per row, one Sync): 9 threads over 3 tenants x 20 batches of 10
    rows, half of them with returning=True; every returned row and, afterwards,
    every row in each tenant's table belongs to that tenant."""
    with pg.connect("appdb", "app") as conn:
        for t in TENANTS:
            conn.execute("truncate tenant_%s.drv_log" % t)
    b = driver_bouncer(bouncer_factory)
    tally = Tally(9 * 20)

    def worker(tenant, n):
        client = "%s-%d" % (tenant, n)
        try:
            conn = psycopg.connect(tenant_dsn(b, tenant, n), autocommit=True)
        except Exception as e:  # noqa: BLE001
            tally.error((tenant, n, "connect"), e)
            return
        with conn:
            for i in range(20):
                rows = [(client, i * 10 + k) for k in range(10)]
                try:
                    cur = conn.cursor()
                    if i % 2:
                        cur.executemany("insert into drv_log(client, n) values (%s, %s) "
                                        "returning owner, n, current_setting('app.tenant_id')", rows, returning=True)
                        got = []
                        while True:
                            got += cur.fetchall()
                            if not cur.nextset():
                                break
                        want = [(tenant, x, tenant) for _, x in rows]
                        tally.check((tenant, n, i), None if got == want else "wanted %r, got %r" % (want, got))
                    else:
                        cur.executemany("insert into drv_log(client, n) values (%s, %s)", rows)
                        tally.check((tenant, n, i), None if cur.rowcount == 10 else "rowcount %r" % cur.rowcount)
                except Exception as e:  # noqa: BLE001
                    tally.error((tenant, n, i), e)
                    if conn.closed:
                        return

    run_threads(tally, worker, [(t, n) for t in TENANTS for n in range(3)])
    tally.assert_clean()
    with pg.connect("appdb", "app") as conn:
        for t in TENANTS:
            got = conn.execute("select client, owner, count(*), count(distinct n) from tenant_%s.drv_log "
                               "group by 1, 2 order by 1" % t).fetchall()
            assert got == [("%s-%d" % (t, n), t, 200, 200) for n in range(3)], (t, got)


def test_psycopg_pipeline_mode(bouncer_factory, schemas):
    """Pipeline mode: 9 threads over 3 tenants x 30 pipelines of 10 queries
    (prepared after psycopg's threshold, so a pipeline carries the Parse of a
    named statement and Binds of statements prepared in earlier pipelines);
    every third pipeline inside a transaction, every tenth one with a division
    by zero in its middle, which must abort just that pipeline."""
    b = driver_bouncer(bouncer_factory)
    rounds, per = 30, 10
    tally = Tally(9 * (rounds - rounds // 10))

    def worker(tenant, n):
        try:
            conn = psycopg.connect(tenant_dsn(b, tenant, n), autocommit=True)
        except Exception as e:  # noqa: BLE001
            tally.error((tenant, n, "connect"), e)
            return
        with conn:
            for i in range(rounds):
                failing = i % 10 == 4
                try:
                    with conn.pipeline():
                        if i % 3 == 2:
                            conn.execute("begin")
                        sent = []
                        for k in range(per):
                            if failing and k == per // 2:
                                conn.execute("select 1 / (%s - %s)", (k, k))
                            id_ = item_id(n, i * per + k)
                            sent.append((conn.execute(ONE, (id_,)), id_))
                        if i % 3 == 2:
                            conn.execute("commit")
                    if failing:
                        tally.error((tenant, n, i), Exception("the division by zero did not fail"))
                        continue
                    bad = None
                    for cur, id_ in sent:
                        bad = bad or verify(tenant, cur.fetchall(), id_)
                    tally.check((tenant, n, i), bad)
                except psycopg.errors.DivisionByZero:
                    if not failing:
                        tally.error((tenant, n, i), Exception("unexpected division by zero"))
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        conn.execute("rollback")
                except Exception as e:  # noqa: BLE001
                    tally.error((tenant, n, i), e)
                    if conn.closed:
                        return
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        conn.rollback()

    run_threads(tally, worker, [(t, n) for t in TENANTS for n in range(3)])
    tally.assert_clean()


# --- asyncpg ---------------------------------------------------------------

@pytest.mark.parametrize("cache", ["default", "evicting"])
def test_asyncpg_statement_cache(bouncer_factory, schemas, cache):
    """asyncpg prepares every query as a named statement (Parse/Describe/Flush,
    then Bind/Execute/Sync) and keeps it in its statement cache: 20 concurrent
    clients x 200 iterations over 2 tenants, pool_size 2, every tenth iteration
    a transaction of two statements, tenant as a startup parameter.
    `evicting`: a cache of 2 statements cycled over 5 queries, so asyncpg
    closes evicted statements (Close/Sync, sent between the Parse of the new
    statement and its Bind) all the time."""
    b = driver_bouncer(bouncer_factory)
    tenants = TENANTS[:2]
    variants = 5 if cache == "evicting" else 1
    rng = RANGE.replace("%s", "$1")
    tally = Tally(20 * 200)

    async def client(tenant, n):
        kw = {"statement_cache_size": 2} if cache == "evicting" else {}
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=b.port, user="app", password=APP_PASSWORD,
                                         database="appdb", server_settings={"tenant": tenant}, ssl=False,
                                         timeout=10, **kw)
        except Exception as e:  # noqa: BLE001
            tally.error((tenant, n, "connect"), e)
            return
        try:
            for i in range(200):
                id_ = item_id(n, i)
                k = i % variants
                query = one_plus(k, "$1")
                try:
                    if i % 10 == 9:
                        first = min(id_, ITEMS - 2)
                        async with conn.transaction():
                            a = await conn.fetch(query, id_)
                            c = await conn.fetch(rng, first)
                        tally.check((tenant, n, i), verify(tenant, a, id_ + k) or verify(tenant, c, first, 3))
                    else:
                        tally.check((tenant, n, i), verify(tenant, await conn.fetch(query, id_), id_ + k))
                except Exception as e:  # noqa: BLE001
                    tally.error((tenant, n, i), e)
                    if conn.is_closed():
                        return
        finally:
            await conn.close()

    async def main():
        try:
            await asyncio.wait_for(asyncio.gather(*[client(tenants[n % 2], n) for n in range(20)]), DEADLINE)
        except asyncio.TimeoutError as e:
            tally.error(("watchdog",), e)

    asyncio.run(main())
    tally.assert_clean()


# --- node-postgres and postgres.js ------------------------------------------

def npm_dir():
    """Where the npm drivers live: installed on first use from drivers/package.json,
    reinstalled when that file changes.  Skips when node or npm is missing."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed (contrib/deps.sh installs it)" % tool)
    d = os.environ.get("PGTENANT_NPM_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pgtenant-npm")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(DRIVERS, "package.json")) as f:
        wanted = f.read()
    stamp = os.path.join(d, "node_modules", ".pgtenant-package.json")
    with open(os.path.join(d, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(stamp) as f:
                if f.read() == wanted:
                    return d
        except FileNotFoundError:
            pass
        with open(os.path.join(d, "package.json"), "w") as f:
            f.write(wanted)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--no-update-notifier",
                            "--loglevel=error"], cwd=d, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip("npm install in %s failed: %s" % (d, (r.stderr or r.stdout)[-2000:]))
        with open(stamp, "w") as f:
            f.write(wanted)
    return d


def run_driver(cmd, env=None, timeout=DEADLINE + 30):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=DRIVERS,
                       env=dict(os.environ, **(env or {})))
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and lines, "driver failed (%d):\n%s\n%s" % (r.returncode, r.stdout[-3000:],
                                                                         r.stderr[-3000:])
    summary = json.loads(lines[-1])
    return summary


def assert_clean_summary(s):
    assert "fatal" not in s, s["fatal"]
    assert s["errors"] == 0, "%d errors, first: %s" % (s["errors"], s["error_samples"])
    assert s["wrong"] == 0, "%d wrong results, first: %s" % (s["wrong"], s["wrong_samples"])
    assert s["ok"] == s["expected"], s


def test_node_postgres_named_queries(bouncer_factory, schemas):
    """node-postgres named queries ({name, text, values}; Parse once per driver
    connection, then Bind/Describe/Execute/Sync): 10 concurrent clients over 2
    tenants x 200, all using the same statement names, pool_size 2."""
    d = npm_dir()
    b = driver_bouncer(bouncer_factory)
    cfg = {"port": b.port, "password": APP_PASSWORD, "tenants": TENANTS[:2], "clients": 10, "iterations": 200,
           "items": ITEMS, "seconds": DEADLINE}
    assert_clean_summary(run_driver(["node", "node_pg.js", json.dumps(cfg)], {"PGTENANT_NPM_DIR": d}))


@pytest.mark.parametrize("package", ["postgres", "postgres4"])
def test_postgresjs_prepare(bouncer_factory, schemas, package):
    """postgres.js with its default prepare: true, 3.x and 4.x (a named
    statement per query text: 3.x sends Parse/Describe/Flush, waits, then
    Bind/Execute/Sync; 4.x Parse/Describe/Bind/Execute/Sync at once, and Close
    of statements it replaces; later runs only Bind/Execute/Sync), one driver
    pool of 3 connections per tenant with 10 workers each, so that queries are
    pipelined on its connections, 3 tenants x 100, every tenth a sql.begin()
    transaction.  postgres.js re-prepares silently after "prepared statement
    does not exist" where it can (outside transactions): the transactions are
    what show a lost statement."""
    d = npm_dir()
    b = driver_bouncer(bouncer_factory)
    cfg = {"port": b.port, "password": APP_PASSWORD, "tenants": TENANTS, "connections": 3, "workers": 10,
           "iterations": 100, "items": ITEMS, "seconds": DEADLINE}
    assert_clean_summary(run_driver(["node", "postgresjs.js", package, json.dumps(cfg)], {"PGTENANT_NPM_DIR": d}))


# --- pgjdbc ----------------------------------------------------------------

def pgjdbc_jar():
    if shutil.which("java") is None:
        pytest.skip("java is not installed (contrib/deps.sh installs it)")
    jars = ([os.environ["PGJDBC_JAR"]] if os.environ.get("PGJDBC_JAR") else
            sorted(glob.glob("/usr/share/java/postgresql.jar")) + sorted(glob.glob("/usr/share/java/postgresql-*.jar")))
    if not jars or not os.path.exists(jars[0]):
        pytest.skip("pgjdbc is not installed (contrib/deps.sh installs libpostgresql-jdbc-java)")
    return jars[0]


@pytest.mark.parametrize("threshold", ["default", "0", "-1"])
def test_pgjdbc(bouncer_factory, schemas, threshold):
    """pgjdbc with prepareThreshold default (5: server-side statement S_n from
    the 5th execution), 0 (never: unnamed statements) and -1 (from the first,
    binary transfer, with a describe-only round trip first): 12 threads over 3
    tenants x 200, pool_size 2, every tenth iteration a transaction of two
    statements.  pgjdbc retries once after "prepared statement does not exist"
    in autocommit, never inside a transaction."""
    jar = pgjdbc_jar()
    b = driver_bouncer(bouncer_factory)
    # a client JIT and the serial collector halve the time the source launcher takes
    s = run_driver(["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", jar, "PgjdbcDriver.java",
                    str(b.port), APP_PASSWORD, threshold, ",".join(TENANTS), "12", "200", str(ITEMS), str(DEADLINE)])
    assert_clean_summary(s)


# --- pgbench ---------------------------------------------------------------

PGBENCH_SECONDS = int(os.environ.get("PGTENANT_PGBENCH_SECONDS", "20"))


@pytest.fixture(scope="module")
def pgbench_db(pg):
    env = dict(os.environ, PGPASSWORD=APP_PASSWORD)
    subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", pg.sockdir, "-p", str(pg.port), "-U", "app", "appdb"],
                   env=env, check=True, capture_output=True)


def test_pgbench_prepared(bouncer_factory, schemas, pgbench_db):
    """pgbench -M prepared -c 64 -j 2 -S (every client prepares the same
    statement name, P_0 or similar) through a tenant pool of 4: no error, no
    aborted client."""
    b = driver_bouncer(bouncer_factory, tenants=["acme"], pool_size=4)
    env = dict(os.environ, PGPASSWORD=APP_PASSWORD)
    r = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", "64", "-j", "2", "-T", str(PGBENCH_SECONDS), "-S",
                        "-h", "127.0.0.1", "-p", str(b.port), "-U", "app.acme", "appdb"],
                       env=env, capture_output=True, text=True, timeout=PGBENCH_SECONDS + 120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "error" not in out.lower() and "aborted" not in out.lower(), out[-3000:]
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    processed = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    assert failed and int(failed.group(1)) == 0, r.stdout
    assert processed and int(processed.group(1)) > 1000, r.stdout
    pools = [p for p in b.admin("SHOW POOLS") if p["database"] == "appdb"]
    assert sum(p["sv_active"] + p["sv_idle"] + p["sv_used"] for p in pools) <= b.pool_size, pools
