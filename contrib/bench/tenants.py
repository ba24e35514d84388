#!/usr/bin/python3
"""
Tenant-count benchmark: costs that should not grow with the number of
tenants.  Starts its own PostgreSQL (as bench.py does), pgtenant and, for the
idle scenario, PgBouncer; everything listens on 127.0.0.1 and stops by itself.

Scenarios (--only picks a comma-separated subset; default all, in this order):

  scale    For each N of --tenants: pgtenant (tenant_pool_mode = shared,
           unknown_tenant = allow) with N idle clients, one per tenant
           t00000..t{N-1}, each of which ran one `select 1` (asyncpg, held
           by --drivers processes).  Prints the login phase's wall time,
           pgtenant's idle CPU (ms per second, all threads, from
           /proc/PID/task/*/schedstat) and wakeups per second (times it was
           scheduled in) over --idle-seconds, its RSS growth per idle client
           (meaningful for large N only), and user-space
           instructions per transaction (callgrind) of pgbench -M simple,
           8 clients, of tenant t00000 while the N clients stay connected:
           counters zeroed once the N logins are done (callgrind_control -z),
           a run of --xacts/6 and one of --xacts transactions per client,
           each dumped (callgrind_control -d); the difference of the two
           divided by the difference in transactions (which cancels the 8
           pgbench logins and the zero/dump overhead).
  idle     PgBouncer with --idle-clients idle clients (one database and
           user, each ran `select 1`): idle CPU and wakeups per second, next
           to pgtenant's with as many clients, one tenant each (scale's
           figure when it measured that N, else measured here).
  login    Instructions per login (callgrind) with each count of
           --login-tenants configured in [tenants] (tNNNNN = pool_size=2,
           unknown_tenant = reject; the client logs in as the last one):
           pgbench -C (a new connection per transaction) with `select 1;`,
           1 client, a run of --logins/6 and one of --logins connections,
           counters zeroed after startup and a warm-up; also the native
           startup time and RSS of each configuration.  Ratio largest/smallest.
  limiter  Instructions per transaction (callgrind, pgbench -M simple,
           8 clients, tenant t00000 with pool_size=8) with tenant_xact_rate = 0
           (no limiter) and tenant_xact_rate = 100000000 (a limit never
           reached, but the bucket is charged on every transaction); prints
           the difference per transaction.
  shared   TPS of --shared-clients clients of as many tenants over one shared
           pool of --shared-pool server connections (tenant_pool_mode =
           shared) against as many clients of ONE tenant over a dedicated pool
           of the same size (tenant_pool_size).  The same asyncpg load driver
           in both: each connection loops the --load query for --duration
           seconds after --warmup seconds.  Also pgtenant's CPU per
           transaction.  --runs N alternates the two N times (order rotating)
           and prints medians and spread (min-max).

A scenario that needs tenant_pool_mode = shared prints "skipped:
tenant_pool_mode=shared not supported by this binary" when pgtenant --check
refuses that key (shared's dedicated half still runs).

Options:
  --only LIST            scenarios to run: scale,idle,login,limiter,shared
  --tenants LIST         scale: tenant (= idle client) counts, default
                         1,1000,10000 (at most 100000: ids are t00000..t99999)
  --scale-pool MODE      scale (and pgtenant's side of idle): shared (default)
                         or dedicated: a pool per tenant, tenant_pool_size = 1,
                         max_db_connections = --pool-size (idle pools make
                         room for busy ones, so the Ir/tx figure then
                         includes t00000's competition for slots with the
                         idle tenants).  Either way t00000, pgbench's tenant,
                         has pool_size=8 (in shared mode: what it may hold)
  --pool-size N          scale: the shared pool's size (default_pool_size)
                         and, in either mode, max_db_connections; idle:
                         PgBouncer's default_pool_size (default 20)
  --idle-seconds S       scale, idle: CPU measured over S seconds (default 10)
  --idle-clients N       idle: PgBouncer's client count (default: the largest
                         of --tenants; at most ~19,000 as root, where
                         bench.start_pgbouncer runs it with ulimit -n 20000)
  --xacts N              scale, limiter: pgbench transactions per client of the
                         long callgrind run (default 1200; the short one runs N/6)
  --no-callgrind         scale: skip the instruction counts (idle CPU only)
  --login-tenants LIST   login: configured tenant counts (default 10,100000)
  --logins N             login: connections of the long run (default 300; the
                         short one makes N/6)
  --shared-clients N     shared: clients (and tenants) (default 1000)
  --shared-pool N        shared: server connections of either pool (default 20)
  --load select|select1  shared: the query each client loops: the pgbench -S
                         query schema-qualified (public.pgbench_accounts,
                         scale 1, random aid; default) or `select 1`
  --duration S           shared: measured seconds per run (default 10)
  --warmup S             shared: seconds run before measuring (default 3)
  --runs N               shared, limiter: interleaved repetitions (default 1)
  --drivers K            asyncpg load-driver processes the clients are spread
                         over (default 2): logins cost the client a SCRAM
                         PBKDF2 in Python (~15 ms each), and one process may
                         not saturate pgtenant
  --batch N              logins in flight per driver process (default 200);
                         a login (with its `select 1`) that takes over 60 s
                         (300 s under callgrind) counts as failed, and failed
                         logins are reported with the figures
  --auth METHOD          scram-sha-256 (default, as bench.py) or md5, for
                         pgtenant and PgBouncer alike; md5 makes 10,000 asyncpg
                         logins ~30x cheaper for the client (the idle and
                         per-transaction figures do not depend on it; login's
                         pgbench logins use it too)
  --binary PATH          pgtenant binary (default build/pgtenant of this tree)
  --pgbouncer PATH       PgBouncer binary (default Debian's, as bench.py)
  --json FILE            also write every figure to FILE as JSON

  contrib/bench/tenants.py                                 everything, full size
  contrib/bench/tenants.py --only scale --tenants 1,200 --scale-pool dedicated
  contrib/bench/tenants.py --only login --login-tenants 10,10000
  contrib/bench/tenants.py --only shared --runs 3 --json out.json

Full size takes a while: 10,000 asyncpg SCRAM logins cost ~150 s of client
CPU each time (three times: scale natively and under callgrind, idle's
PgBouncer; --auth md5 avoids it), callgrind slows pgtenant ~50x.  Every wait
is bounded; the load drivers exit by themselves when their lifetime is over
or this script goes away, and every child is stopped in a finally (also on
Ctrl-C and SIGTERM).  Runs as root too (PostgreSQL and PgBouncer then run as
postgres, as in bench.py); needs valgrind, pgbench and /usr/bin/python3's
asyncpg.
"""
import argparse
import asyncio
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SCENARIOS = ("scale", "idle", "login", "limiter", "shared")
SKIP_SHARED = "skipped: tenant_pool_mode=shared not supported by this binary"
PASSWORD = "apppass"  # bench.write_config's userlist
TENANT = "t%05d"
MAX_TENANTS = 100000
BENCH_TENANT = TENANT % 0
SELECT_QUERY = "select abalance from public.pgbench_accounts where aid = %d"
SCRIPTS = {
    "select": "\\set aid random(1, 100000)\nselect abalance from public.pgbench_accounts where aid = :aid;\n",
    "select1": "select 1;\n",
}
NOFILE = {"want": 4096}


class Unsupported(Exception):
    """pgtenant refuses tenant_pool_mode."""


def raise_nofile(want):
    """Soft (and if need be, hard) RLIMIT_NOFILE to at least want, as far as
    allowed; returns the soft limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def child_setup():
    """preexec_fn of every long-lived child: its own session (Ctrl-C reaches
    only this script, which stops it) and the fd limit."""
    os.setsid()
    raise_nofile(NOFILE["want"])


# ---------------------------------------------------------------- load driver
# Runs as `tenants.py --driver SPEC` (a separate process: its connections'
# fds, its CPU).  Writes one JSON line per event to stdout, reads commands
# from stdin: "run WARMUP DURATION", "quit".  Exits on EOF, on "quit" and
# when spec["lifetime"] seconds are over.

def _emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def driver_main(spec):
    watchdog = threading.Timer(spec["lifetime"], os._exit, [3])
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(_driver(spec))
    finally:
        sys.stdout.flush()
        os._exit(0)  # no orderly close of thousands of connections


async def _driver(spec):
    import asyncpg
    loop = asyncio.get_running_loop()
    n = spec["count"]
    conns = [None] * n
    errors = []

    async def login(i):
        settings = None
        if spec["tenant"] == "each":
            settings = {"tenant": TENANT % (spec["first"] + i)}
        elif spec["tenant"]:
            settings = {"tenant": spec["tenant"]}
        c = await asyncpg.connect(host="127.0.0.1", port=spec["port"], user="app", password=PASSWORD,
                                  database="appdb", server_settings=settings, ssl=False,
                                  timeout=spec["login_timeout"], statement_cache_size=0)
        try:
            await asyncio.wait_for(c.execute("select 1"), spec["login_timeout"])
        except BaseException:
            c.terminate()
            raise
        conns[i] = c

    t0 = time.monotonic()
    for s in range(0, n, spec["batch"]):
        if time.monotonic() - t0 > spec["ready_timeout"]:
            errors.append("login phase took over %d s" % spec["ready_timeout"])
            break
        res = await asyncio.gather(*(login(i) for i in range(s, min(n, s + spec["batch"]))),
                                   return_exceptions=True)
        errors += [repr(r)[:300] for r in res if isinstance(r, BaseException)]
    live = [c for c in conns if c is not None]
    _emit({"ready": len(live), "failed": n - len(live), "error": errors[0] if errors else None,
           "seconds": time.monotonic() - t0})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "run":
            _emit(await _run(live, float(cmd[1]), float(cmd[2]), spec["query"]))
    for c in live:
        c.terminate()


async def _run(conns, warmup, duration, query):
    import asyncpg
    st = {"n": 0, "stop": False, "errors": 0, "lost": 0, "error": None}

    async def worker(c):
        while not st["stop"]:
            q = SELECT_QUERY % random.randint(1, 100000) if query == "select" else "select 1"
            try:
                await c.execute(q)
            except asyncpg.PostgresError as e:
                st["errors"] += 1
                st["error"] = st["error"] or repr(e)[:300]
                if c.is_closed():
                    st["lost"] += 1
                    return
            except Exception as e:  # noqa: BLE001 - a lost connection ends this worker
                st["lost"] += 1
                st["error"] = st["error"] or repr(e)[:300]
                return
            else:
                st["n"] += 1

    tasks = [asyncio.ensure_future(worker(c)) for c in conns if not c.is_closed()]
    await asyncio.sleep(warmup)
    n0, t0 = st["n"], time.monotonic()
    _emit({"measuring": True})
    await asyncio.sleep(duration)
    n1, t1 = st["n"], time.monotonic()
    st["stop"] = True
    _, pending = await asyncio.wait(tasks, timeout=30) if tasks else (None, [])
    for t in pending:
        t.cancel()
    return {"xacts": n1 - n0, "seconds": t1 - t0, "errors": st["errors"], "lost": st["lost"],
            "stuck": len(pending), "error": st["error"]}


if __name__ == "__main__" and sys.argv[1:2] == ["--driver"]:
    driver_main(json.loads(sys.argv[2]))

sys.path.insert(0, HERE)
import bench  # noqa: E402  (also puts test/integration on sys.path: conftest's Postgres)


# ---------------------------------------------------------------- processes

class Clients:
    """count asyncpg connections spread over up to K driver processes; each
    logs in (tenant: "each" = t{first+i}, a tenant id, or None) and runs
    `select 1` once."""

    def __init__(self, ctx, port, count, tenant, query="select1", ready_timeout=600, lifetime=3600,
                 login_timeout=60):
        self.ctx, self.procs, self.bufs, self.logs = ctx, [], [], []
        k = max(1, min(ctx.args.drivers, count))
        self.count = count
        self.ready_timeout = ready_timeout
        self.login_timeout = login_timeout
        first = 0
        ctx.live.append(self)
        for i in range(k):
            n = count // k + (1 if i < count % k else 0)
            spec = {"port": port, "count": n, "first": first, "tenant": tenant, "query": query,
                    "batch": ctx.args.batch, "login_timeout": login_timeout,
                    "ready_timeout": ready_timeout, "lifetime": lifetime}
            first += n
            log = open(os.path.join(ctx.workdir, "driver-%d-%d.log" % (port, i)), "w")
            self.logs.append(log.name)
            self.procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--driver",
                                                json.dumps(spec)], stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=log, preexec_fn=child_setup))
            log.close()
            self.bufs.append(b"")

    def _line(self, i, deadline):
        p = self.procs[i]
        fd = p.stdout.fileno()
        while b"\n" not in self.bufs[i]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("load driver: no answer in time")
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError("load driver exited (%s)" % self._log_tail(i))
                self.bufs[i] += chunk
        line, self.bufs[i] = self.bufs[i].split(b"\n", 1)
        return json.loads(line)

    def _log_tail(self, i):
        try:
            with open(self.logs[i]) as f:
                return f.read()[-300:].strip() or "no output"
        except OSError:
            return "no log"

    def ready(self):
        """{"ready", "failed", "error", "seconds"} over all drivers."""
        deadline = time.monotonic() + self.ready_timeout + 2 * self.login_timeout + 60
        out = {"ready": 0, "failed": 0, "error": None, "seconds": 0.0}
        for i in range(len(self.procs)):
            r = self._line(i, deadline)
            out["ready"] += r["ready"]
            out["failed"] += r["failed"]
            out["error"] = out["error"] or r["error"]
            out["seconds"] = max(out["seconds"], r["seconds"])
        return out

    def run(self, warmup, duration, on_start=None, on_end=None):
        """Every connection loops its query; on_start/on_end are called
        when the drivers start and stop counting.  {"tps", "xacts", "errors",
        "lost", "stuck", "error"}."""
        for p in self.procs:
            p.stdin.write(("run %g %g\n" % (warmup, duration)).encode())
            p.stdin.flush()
        deadline = time.monotonic() + warmup + 60
        for i in range(len(self.procs)):
            self._line(i, deadline)
        if on_start:
            on_start()
        deadline = time.monotonic() + duration + 90
        res = [self._line(i, deadline) for i in range(len(self.procs))]
        if on_end:
            on_end()
        out = {"tps": sum(r["xacts"] / r["seconds"] for r in res), "xacts": sum(r["xacts"] for r in res)}
        for k in ("errors", "lost", "stuck"):
            out[k] = sum(r[k] for r in res)
        out["error"] = next((r["error"] for r in res if r["error"]), None)
        return out

    def stop(self):
        for p in self.procs:
            try:
                p.stdin.write(b"quit\n")
                p.stdin.close()
            except (OSError, ValueError):
                pass
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self in self.ctx.live:
            self.ctx.live.remove(self)


class Server:
    """A pgtenant process (optionally under valgrind): port, pid, stop()."""

    def __init__(self, ctx, name, cmd, port, logfile, start_timeout):
        self.ctx, self.name, self.port, self.logfile = ctx, name, port, logfile
        with open(logfile, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=child_setup)
        self.pid = self.proc.pid
        ctx.live.append(self)
        try:
            bench.wait_port(port, start_timeout, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError("%s did not start: %s: %s" % (name, e, self.log_tail()))

    def log_tail(self):
        try:
            with open(self.logfile) as f:
                return f.read()[-400:].strip()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in self.ctx.live:
            self.ctx.live.remove(self)


class BouncerHandle:
    """bench.start_pgbouncer's Pooler, registered for cleanup."""

    def __init__(self, ctx, pooler):
        self.ctx, self.p, self.pid, self.port = ctx, pooler, pooler.pid, pooler.port
        ctx.live.append(self)

    def stop(self):
        self.p.stop()
        if self in self.ctx.live:
            self.ctx.live.remove(self)


def start_pgtenant(ctx, name, pool_size, settings, tenants=(), callgrind=False, start_timeout=60):
    """pgtenant with bench.write_config's ini (SCRAM, transaction mode,
    max_client_conn, ...) plus settings [(key, value)] and [tenants] lines.
    Raises Unsupported if --check refuses tenant_pool_mode."""
    port = bench.free_port()
    d = os.path.join(ctx.workdir, name)
    extra = "".join("%s = %s\n" % kv for kv in settings)
    if ctx.args.auth != "scram-sha-256":
        extra += "auth_type = %s\n" % ctx.args.auth  # the later line wins
    if tenants:
        extra += "[tenants]\n" + "".join(tenants)
    ini = bench.write_config(d, "pgtenant", ctx.pg, port, pool_size, extra)
    r = subprocess.run([ctx.args.binary, "--check", ini], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        msg = (r.stderr + r.stdout).strip()
        if "tenant_pool_mode" in msg:
            raise Unsupported(msg)
        raise RuntimeError("pgtenant --check: %s" % msg[-400:])
    cmd = [ctx.args.binary, "-q", ini]
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + os.path.join(d, "callgrind.out"),
               "--log-file=" + os.path.join(d, "valgrind.log")] + cmd
    t0 = time.monotonic()
    srv = Server(ctx, name, cmd, port, os.path.join(d, "stderr.log"), start_timeout)
    srv.start_s = time.monotonic() - t0
    srv.cg_out = os.path.join(d, "callgrind.out")
    srv.cg_parts = 0
    return srv


def base_settings(max_clients=0):
    return [("max_db_connections", "0"), ("max_client_conn", str(max(20000, max_clients + 1000))),
            ("tenant_required", "yes"), ("unknown_tenant", "allow"), ("tenant_idle_timeout", "3600"),
            ("tenant_max_client_conn", str(max(20000, max_clients + 1000))), ("log_stats", "no")]


def pool_settings(mode, pool_size):
    """Settings for a tenant pool mode: shared (one pool of pool_size for all
    tenants) or dedicated (one server connection per tenant); either way at
    most pool_size server connections in all (max_db_connections), so that a
    binary whose shared mode still opens a pool per tenant cannot exhaust
    PostgreSQL's max_connections."""
    cap = [("max_db_connections", str(pool_size))]
    if mode == "shared":
        return [("tenant_pool_mode", "shared"), ("default_pool_size", str(pool_size))] + cap
    return [("tenant_pool_size", "1")] + cap


# ---------------------------------------------------------------- measuring

def cpu_ns(pid):
    """(CPU ns, times scheduled in) of all threads of pid, from schedstat;
    bench.cpu_seconds' clock ticks and None if there is none."""
    total, slices, found = 0, 0, False
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                    a = f.read().split()
                total += int(a[0])
                slices += int(a[2])
                found = True
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        pass
    if not found:
        return bench.cpu_seconds(pid) * 1e9, None
    return total, slices


def idle_cpu(pid, seconds):
    """{"cpu_ms_per_s", "wakeups_per_s"} of pid over seconds."""
    c0, w0 = cpu_ns(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    c1, w1 = cpu_ns(pid)
    dt = time.monotonic() - t0
    return {"cpu_ms_per_s": (c1 - c0) / 1e6 / dt,
            "wakeups_per_s": (w1 - w0) / dt if w0 is not None else None}


def pgbench(port, script, clients, transactions, tenant, connect=False, timeout=1800):
    """(tps, transactions processed) of one pgbench -M simple run of the
    script file as tenant; raises bench.PgbenchFailed."""
    args = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-M", "simple", "-n",
            "-c", str(clients), "-j", str(min(2, clients)), "-t", str(transactions), "-f", script]
    if connect:
        args.append("-C")
    args.append("appdb")
    env = dict(os.environ, PGPASSWORD=PASSWORD, PGOPTIONS="-c tenant=%s" % tenant)
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise bench.PgbenchFailed("pgbench hung: no end after %d s" % timeout)
    tps = re.search(r"tps = ([\d.]+)", r.stdout)
    n = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    if r.returncode != 0 or not tps or not n or (failed and int(failed.group(1))):
        err = re.search(r"^.*\b(?:ERROR|FATAL|error):.*$", r.stderr, re.M)
        raise bench.PgbenchFailed(err.group(0).strip() if err else (r.stderr or r.stdout)[-300:].strip())
    return float(tps.group(1)), int(n.group(1))


def callgrind_control(srv, flag):
    r = subprocess.run(["callgrind_control", flag, str(srv.pid)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 or "OK" not in r.stdout:
        raise RuntimeError("callgrind_control %s: %s" % (flag, (r.stderr or r.stdout)[-300:]))


def callgrind_dump(srv):
    """Ir since the last zero: callgrind_control -d writes OUT.N; its
    summary line (as bench.py reads; totals can also hold costs from before
    the zero)."""
    callgrind_control(srv, "-d")
    srv.cg_parts += 1
    path = "%s.%d" % (srv.cg_out, srv.cg_parts)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read()
            m = re.search(r"^summary: (\d+)", text, re.M)
            if m and re.search(r"^totals: \d+", text, re.M):  # totals: the last line, the file is complete
                return int(m.group(1))
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no %s" % path)


def ir_per_unit(srv, run, small, large):
    """Instructions per unit of work: run(k) does k units and returns how
    many it did; counters zeroed before a small and a large run, dumped
    after each; (large - small) / (units difference)."""
    callgrind_control(srv, "-z")
    n1 = run(small)
    a = callgrind_dump(srv)
    callgrind_control(srv, "-z")
    n2 = run(large)
    b = callgrind_dump(srv)
    return (b - a) / float(n2 - n1)


def spread(values):
    return bench.spread(values) if values else (None, None, None)


def fmt(v, f="%.0f"):
    return bench.fmt(v, f)


def say(*a):
    print(*a)
    sys.stdout.flush()


# ---------------------------------------------------------------- scenarios

def measure_idle(ctx, pid, port, n, tenant, held):
    """n idle clients to the pooler at port (tenant: "each" = one tenant per
    client, None = none), kept in held for the caller to stop; then the
    pooler's idle CPU and RSS per client."""
    a = ctx.args
    rss0 = bench.rss_kb(pid)
    cl = Clients(ctx, port, n, tenant, ready_timeout=120 + n // 10, lifetime=900 + n // 5 + a.idle_seconds)
    held.append(cl)
    r = cl.ready()
    row = {"login_s": r["seconds"], "clients": r["ready"], "failed_logins": r["failed"]}
    if r["failed"]:
        row["login_error"] = r["error"]
        say("  %d logins failed: %s" % (r["failed"], r["error"]))
    time.sleep(1.0)
    row.update(idle_cpu(pid, a.idle_seconds))
    row["rss_kib"] = bench.rss_kb(pid)
    row["rss_per_client"] = (row["rss_kib"] - rss0) * 1024.0 / max(1, r["ready"])
    return row


def scale_idle(ctx, n, mode):
    """pgtenant (natively) with n idle clients, one per tenant: {"login_s",
    "cpu_ms_per_s", "wakeups_per_s", "rss_kib", "rss_per_client"} or raises
    Unsupported."""
    a = ctx.args
    srv = start_pgtenant(ctx, "idle-%s-%d" % (mode, n), a.pool_size,
                         base_settings(n) + pool_settings(mode, a.pool_size))
    held = []
    try:
        say("  %d idle clients (one tenant each) to pgtenant: logging in ..." % n)
        return measure_idle(ctx, srv.pid, srv.port, n, "each", held)
    finally:
        for cl in held:
            cl.stop()
        srv.stop()


def scenario_scale(ctx):
    a = ctx.args
    mode = a.scale_pool
    out = {"pool_mode": mode, "pool_size": a.pool_size, "rows": []}
    script = ctx.scripts["select"]
    small, large = max(1, a.xacts // 6), a.xacts
    for n in a.tenants:
        say("scale: %d tenants (tenant_pool_mode=%s)" % (n, mode))
        try:
            row = scale_idle(ctx, n, mode)
        except Unsupported:
            say("scale: " + SKIP_SHARED + " (--scale-pool dedicated runs it with a pool per tenant)")
            out["skipped"] = SKIP_SHARED
            return out
        row["tenants"] = n
        say("  idle: %.2f ms CPU/s, %s wakeups/s, %.0f bytes RSS per client (logins took %.1f s)" %
            (row["cpu_ms_per_s"], fmt(row["wakeups_per_s"], "%.1f"), row["rss_per_client"], row["login_s"]))
        if not a.no_callgrind:
            tenants = ["%s = pool_size=8\n" % BENCH_TENANT]  # shared: what it may hold of the shared pool
            srv = start_pgtenant(ctx, "scale-cg-%s-%d" % (mode, n), a.pool_size,
                                 base_settings(n) + pool_settings(mode, a.pool_size), tenants, callgrind=True,
                                 start_timeout=120)
            cl = None
            try:
                say("  under callgrind: %d idle clients logging in ..." % n)
                cl = Clients(ctx, srv.port, n, "each", ready_timeout=300 + n // 2, lifetime=3600 + n,
                             login_timeout=300)
                r = cl.ready()
                row["cg_login_s"] = r["seconds"]
                if r["failed"]:
                    say("  under callgrind: %d logins failed: %s" % (r["failed"], r["error"]))
                    row["cg_failed_logins"] = r["failed"]
                pgbench(srv.port, script, 8, 20, BENCH_TENANT)  # warm-up: the tenant's pool, its connections
                row["ir_per_xact"] = ir_per_unit(
                    srv, lambda k: pgbench(srv.port, script, 8, k, BENCH_TENANT)[1], small, large)
                say("  callgrind: %.0f instructions per transaction (pgbench -M simple, 8 clients, logins "
                    "took %.1f s)" % (row["ir_per_xact"], r["seconds"]))
            except bench.PgbenchFailed as e:
                row["ir_error"] = "pgbench failed: %s" % e
                say("  callgrind: " + row["ir_error"])
            finally:
                if cl:
                    cl.stop()
                srv.stop()
        out["rows"].append(row)
    return out


def scenario_idle(ctx, scale):
    a = ctx.args
    n = a.idle_clients or max(a.tenants)
    out = {"clients": n}
    version = bench.pgbouncer_version(a.pgbouncer)[0]
    out["pgbouncer_version"] = version
    say("idle: %d idle clients to PgBouncer %s" % (n, version))
    orig = bench.write_config
    if a.auth != "scram-sha-256":  # bench.start_pgbouncer writes its ini through bench.write_config
        bench.write_config = lambda d, s, pg, port, ps, extra="": orig(d, s, pg, port, ps,
                                                                        extra + "auth_type = %s\n" % a.auth)
    try:
        pb = BouncerHandle(ctx, bench.start_pgbouncer(ctx.workdir, ctx.pg, a.pool_size, exe=a.pgbouncer))
    finally:
        bench.write_config = orig
    held = []
    try:
        row = measure_idle(ctx, pb.pid, pb.port, n, None, held)
        out["pgbouncer"] = row
        say("  PgBouncer: %.2f ms CPU/s, %s wakeups/s, %.0f bytes RSS per client" %
            (row["cpu_ms_per_s"], fmt(row["wakeups_per_s"], "%.1f"), row["rss_per_client"]))
    finally:
        for cl in held:
            cl.stop()
        pb.stop()
    prev = [x for x in (scale or {}).get("rows", []) if x["tenants"] == n]
    if prev:
        out["pgtenant"] = dict(prev[0], source="scale")
    else:
        say("idle: %d idle clients to pgtenant (tenant_pool_mode=%s), one tenant each" % (n, a.scale_pool))
        try:
            out["pgtenant"] = scale_idle(ctx, n, a.scale_pool)
        except Unsupported:
            out["pgtenant"] = {"skipped": SKIP_SHARED}
            say("idle: pgtenant " + SKIP_SHARED)
            return out
    p = out["pgtenant"]
    say("  pgtenant: %.2f ms CPU/s, %s wakeups/s, %.0f bytes RSS per client" %
        (p["cpu_ms_per_s"], fmt(p["wakeups_per_s"], "%.1f"), p["rss_per_client"]))
    return out


def scenario_login(ctx):
    a = ctx.args
    out = {"rows": []}
    script = ctx.scripts["select1"]
    small, large = max(1, a.logins // 6), a.logins
    for t in a.login_tenants:
        tenant = TENANT % (t - 1)
        lines = ["%s = pool_size=2\n" % (TENANT % i) for i in range(t)]
        settings = base_settings() + [("unknown_tenant", "reject")]
        row = {"tenants": t, "client_tenant": tenant}
        say("login: %d tenants in [tenants], client tenant %s" % (t, tenant))
        srv = start_pgtenant(ctx, "login-%d" % t, 20, settings, lines, start_timeout=120)
        try:
            row["startup_s"] = srv.start_s
            pgbench(srv.port, script, 1, 1, tenant, connect=True)
            row["rss_kib"] = bench.rss_kb(srv.pid)
        finally:
            srv.stop()
        srv = start_pgtenant(ctx, "login-cg-%d" % t, 20, settings, lines, callgrind=True,
                             start_timeout=300 + t // 100)
        try:
            pgbench(srv.port, script, 1, 5, tenant, connect=True)  # warm-up: the pool's server connection
            row["ir_per_login"] = ir_per_unit(
                srv, lambda k: pgbench(srv.port, script, 1, k, tenant, connect=True)[1], small, large)
            say("  %.0f instructions per login (pgbench -C, select 1); startup %.2f s, RSS %d KiB" %
                (row["ir_per_login"], row["startup_s"], row["rss_kib"]))
        except bench.PgbenchFailed as e:
            row["ir_error"] = "pgbench failed: %s" % e
            say("  " + row["ir_error"])
        finally:
            srv.stop()
        out["rows"].append(row)
    ok = [r for r in out["rows"] if r.get("ir_per_login")]
    if len(ok) >= 2:
        out["ratio"] = ok[-1]["ir_per_login"] / ok[0]["ir_per_login"]
    return out


def scenario_limiter(ctx):
    a = ctx.args
    script = ctx.scripts["select"]
    small, large = max(1, a.xacts // 6), a.xacts
    rates = ("0", "100000000")
    vals = dict((r, []) for r in rates)
    errors = {}
    for i in range(a.runs):
        for rate in rates[i % 2:] + rates[:i % 2]:
            say("limiter: tenant_xact_rate = %s, run %d of %d" % (rate, i + 1, a.runs))
            srv = start_pgtenant(ctx, "limiter-%s-%d" % (rate, i), 20,
                                 base_settings() + [("tenant_xact_rate", rate)],
                                 ["%s = pool_size=8\n" % BENCH_TENANT], callgrind=True, start_timeout=120)
            try:
                pgbench(srv.port, script, 8, 20, BENCH_TENANT)
                v = ir_per_unit(srv, lambda k: pgbench(srv.port, script, 8, k, BENCH_TENANT)[1], small, large)
                vals[rate].append(v)
                say("  %.0f instructions per transaction" % v)
            except bench.PgbenchFailed as e:
                errors[rate] = "pgbench failed: %s" % e
                say("  " + errors[rate])
            finally:
                srv.stop()
    out = {"runs": vals, "errors": errors}
    for r in rates:
        out[r] = spread(vals[r])
    pairs = [b - x for x, b in zip(vals["0"], vals["100000000"])]
    if pairs:
        out["difference"] = spread(pairs)
    return out


def scenario_shared(ctx):
    a = ctx.args
    n, pool = a.shared_clients, a.shared_pool
    cfgs = []
    out = {"clients": n, "pool": pool, "load": a.load, "runs": {}}
    life = 900 + n // 5 + a.runs * (a.warmup + a.duration + 150)
    say("shared: %d clients of one tenant over a dedicated pool of %d" % (n, pool))
    srv = start_pgtenant(ctx, "shared-dedicated", pool, base_settings(n) + [("tenant_pool_size", str(pool))])
    cl = Clients(ctx, srv.port, n, BENCH_TENANT, a.load, ready_timeout=120 + n // 10, lifetime=life)
    cfgs.append(("dedicated", srv, cl))
    say("shared: %d clients of %d tenants over one shared pool of %d" % (n, n, pool))
    try:
        srv = start_pgtenant(ctx, "shared-shared", pool, base_settings(n) + pool_settings("shared", pool))
        cl = Clients(ctx, srv.port, n, "each", a.load, ready_timeout=120 + n // 10, lifetime=life)
        cfgs.append(("shared", srv, cl))
    except Unsupported:
        out["skipped"] = SKIP_SHARED
        say("shared: " + SKIP_SHARED + " (the dedicated half runs)")
    for name, srv, cl in cfgs:
        r = cl.ready()
        if r["failed"]:
            say("  %s: %d logins failed: %s" % (name, r["failed"], r["error"]))
        out[name + "_logins"] = r
        out["runs"][name] = []
    for i in range(a.runs):
        for name, srv, cl in cfgs[i % len(cfgs):] + cfgs[:i % len(cfgs)]:
            c = {}
            r = cl.run(a.warmup, a.duration, lambda: c.update(c0=cpu_ns(srv.pid)[0]),
                       lambda: c.update(c1=cpu_ns(srv.pid)[0]))
            r["us_per_xact"] = (c["c1"] - c["c0"]) / 1e3 / r["xacts"] if r["xacts"] else None
            out["runs"][name].append(r)
            say("  run %d, %s: %.0f TPS, pgtenant %s us CPU per transaction%s" %
                (i + 1, name, r["tps"], fmt(r["us_per_xact"], "%.1f"),
                 "" if not (r["errors"] or r["lost"] or r["stuck"]) else
                 " (%d errors, %d connections lost, %d stuck: %s)" % (r["errors"], r["lost"], r["stuck"],
                                                                       r["error"])))
    for name, srv, cl in cfgs:
        cl.stop()
        srv.stop()
        rs = out["runs"][name]
        out[name] = {"tps": spread([r["tps"] for r in rs]),
                     "us_per_xact": spread([r["us_per_xact"] for r in rs if r["us_per_xact"] is not None])}
    if "shared" in out and "dedicated" in out:
        out["ratio"] = spread([s["tps"] / d["tps"] for s, d in zip(out["runs"]["shared"], out["runs"]["dedicated"])
                               if d["tps"]])
    return out


# ---------------------------------------------------------------- report

def med(t, f="%.0f"):
    """"median (min-max)" of a spread triple, or just the value when they agree."""
    if not t or t[0] is None:
        return "NA"
    return f % t[0] if t[1] == t[2] else "%s (%s-%s)" % (f % t[0], f % t[1], f % t[2])


def report(res, args):
    print()
    print("=" * 78)
    if "scale" in res:
        s = res["scale"]
        print("scale: tenant_pool_mode=%s, pool %d, idle CPU over %g s, pgbench -M simple 8 clients" %
              (s["pool_mode"], s["pool_size"], args.idle_seconds))
        if s.get("skipped") and not s["rows"]:
            print("  " + s["skipped"])
        else:
            print("  %8s | %8s | %11s | %9s | %11s | %12s" % ("tenants", "login s", "idle ms/s", "wakeup/s",
                                                             "RSS B/cl", "Ir/tx"))
            for r in s["rows"]:
                print("  %8d | %8.1f | %11.2f | %9s | %11.0f | %12s" %
                      (r["tenants"], r["login_s"], r["cpu_ms_per_s"], fmt(r["wakeups_per_s"], "%.1f"),
                       r["rss_per_client"], fmt(r.get("ir_per_xact")) if "ir_error" not in r else "FAILED"))
            for r in s["rows"]:
                for k, what in (("failed_logins", "natively"), ("cg_failed_logins", "under callgrind")):
                    if r.get(k):
                        print("  %d tenants: %d of the idle clients' logins FAILED %s" % (r["tenants"], r[k], what))
                if r.get("ir_error"):
                    print("  %d tenants: Ir/tx FAILED: %s" % (r["tenants"], r["ir_error"]))
            if s.get("skipped"):
                print("  " + s["skipped"])
    if "idle" in res:
        s = res["idle"]
        print("idle: %d idle clients, CPU over %g s" % (s["clients"], args.idle_seconds))
        for name in ("pgbouncer", "pgtenant"):
            r = s.get(name)
            if not r:
                continue
            if "skipped" in r:
                print("  %-10s %s" % (name, r["skipped"]))
                continue
            print("  %-10s %8.2f ms CPU/s  %8s wakeups/s  %6.0f bytes RSS per client%s%s" %
                  (name, r["cpu_ms_per_s"], fmt(r["wakeups_per_s"], "%.1f"), r["rss_per_client"],
                   " (PgBouncer %s)" % s["pgbouncer_version"] if name == "pgbouncer" else
                   " (tenant_pool_mode=%s, one tenant per client)" % args.scale_pool,
                   ", %d logins FAILED" % r["failed_logins"] if r.get("failed_logins") else ""))
    if "login" in res:
        s = res["login"]
        print("login: pgbench -C, select 1, 1 client, %s" % args.auth)
        print("  %8s | %10s | %9s | %12s" % ("tenants", "startup s", "RSS KiB", "Ir/login"))
        for r in s["rows"]:
            print("  %8d | %10.2f | %9d | %12s" % (r["tenants"], r.get("startup_s", 0), r.get("rss_kib", 0),
                                                    fmt(r.get("ir_per_login"))))
        if "ratio" in s:
            print("  ratio Ir/login %d tenants / %d tenants: %.3f" %
                  (s["rows"][-1]["tenants"], s["rows"][0]["tenants"], s["ratio"]))
    if "limiter" in res:
        s = res["limiter"]
        print("limiter: Ir per transaction, pgbench -M simple, 8 clients, %d run(s)" % args.runs)
        print("  tenant_xact_rate = 0:          %s" % med(s["0"]))
        print("  tenant_xact_rate = 100000000:  %s" % med(s["100000000"]))
        print("  difference per transaction:    %s" % med(s.get("difference")))
    if "shared" in res:
        s = res["shared"]
        print("shared: %d clients looping %s, pools of %d, %d s per run, %d run(s); TPS median (min-max)" %
              (s["clients"], s["load"], s["pool"], args.duration, args.runs))
        for name in ("dedicated", "shared"):
            if name in s:
                lg = s[name + "_logins"]
                bad = sum(r["errors"] + r["lost"] + r["stuck"] for r in s["runs"][name])
                print("  %-10s %s TPS, pgtenant %s us CPU per transaction%s%s" %
                      (name, med(s[name]["tps"]), med(s[name]["us_per_xact"], "%.1f"),
                       " (only %d of %d clients logged in)" % (lg["ready"], s["clients"]) if lg["failed"] else "",
                       " (%d query errors / lost / stuck connections)" % bad if bad else ""))
        if s.get("skipped"):
            print("  shared     " + s["skipped"])
        if "ratio" in s:
            print("  ratio shared / dedicated TPS (per run pair): %s" % med(s["ratio"], "%.3f"))
    for name, err in sorted(res.get("errors", {}).items()):
        print("%s: FAILED: %s" % (name, err))


# ---------------------------------------------------------------- main

class Ctx:
    pass


def int_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--tenants", type=int_list, default=[1, 1000, 10000])
    ap.add_argument("--scale-pool", choices=("shared", "dedicated"), default="shared")
    ap.add_argument("--pool-size", type=int, default=20)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--idle-clients", type=int, default=0)
    ap.add_argument("--xacts", type=int, default=1200)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--login-tenants", type=int_list, default=[10, 100000])
    ap.add_argument("--logins", type=int, default=300)
    ap.add_argument("--shared-clients", type=int, default=1000)
    ap.add_argument("--shared-pool", type=int, default=20)
    ap.add_argument("--load", choices=("select", "select1"), default="select")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--drivers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--auth", choices=("scram-sha-256", "md5"), default="scram-sha-256")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "pgtenant"))
    ap.add_argument("--pgbouncer", default=bench.DEFAULT_PGBOUNCER)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    if not only or any(x not in SCENARIOS for x in only):
        ap.error("--only: a comma-separated list of %s" % ",".join(SCENARIOS))
    for name, vals in (("--tenants", args.tenants), ("--login-tenants", args.login_tenants)):
        if not vals or any(v < 1 or v > MAX_TENANTS for v in vals):
            ap.error("%s: counts from 1 to %d" % (name, MAX_TENANTS))
    if args.xacts < 6 or args.logins < 6 or args.runs < 1 or args.drivers < 1 or args.batch < 1:
        ap.error("--xacts and --logins at least 6, --runs, --drivers and --batch at least 1")
    if args.shared_clients < 1 or args.shared_clients > MAX_TENANTS or args.shared_pool < 1:
        ap.error("--shared-clients from 1 to %d, --shared-pool at least 1" % MAX_TENANTS)
    args.binary = os.path.abspath(args.binary)
    if not os.access(args.binary, os.X_OK):
        ap.error("no pgtenant binary at %s (build it, or --binary)" % args.binary)
    if any(x in only for x in ("scale", "login", "limiter")) and not (args.no_callgrind and only == ["scale"]):
        for tool in ("valgrind", "callgrind_control"):
            if not shutil.which(tool):
                ap.error("%s not found (needed for the instruction counts)" % tool)

    most = max([max(args.tenants) if "scale" in only else 0,
                (args.idle_clients or max(args.tenants)) if "idle" in only else 0,
                2 * args.shared_clients if "shared" in only else 0])
    NOFILE["want"] = most + 4096
    got = raise_nofile(NOFILE["want"])
    if got < NOFILE["want"]:
        say("warning: RLIMIT_NOFILE %d, fewer than the %d file descriptors wanted" % (got, NOFILE["want"]))

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    ctx = Ctx()
    ctx.args, ctx.live, ctx.pg = args, [], None
    ctx.workdir = tempfile.mkdtemp(prefix="pgt-tenants-")
    os.chmod(ctx.workdir, 0o755)
    res = {"settings": dict((k, v) for k, v in vars(args).items()), "errors": {}}
    try:
        ctx.pg = bench.Postgres()
        subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", ctx.pg.sockdir, "-p", str(ctx.pg.port), "-U", "app",
                        "appdb"], check=True, capture_output=True, env=dict(os.environ, PGPASSWORD=PASSWORD),
                       timeout=300)
        ctx.scripts = {}
        for name, text in SCRIPTS.items():
            ctx.scripts[name] = os.path.join(ctx.workdir, name + ".sql")
            with open(ctx.scripts[name], "w") as f:
                f.write(text)
        version = subprocess.run([args.binary, "-V"], capture_output=True, text=True).stdout.strip()
        res["pgtenant_version"] = version
        say("%s (%s), PostgreSQL %s, %s, %d CPUs, scenarios %s" %
            (version, args.binary, ctx.pg.sql("show server_version")[0][0], args.auth, os.cpu_count(),
             ",".join(only)))
        steps = [("scale", lambda: scenario_scale(ctx)), ("idle", lambda: scenario_idle(ctx, res.get("scale"))),
                 ("login", lambda: scenario_login(ctx)), ("limiter", lambda: scenario_limiter(ctx)),
                 ("shared", lambda: scenario_shared(ctx))]
        for name, fn in steps:
            if name not in only:
                continue
            try:
                res[name] = fn()
            except (RuntimeError, OSError, subprocess.SubprocessError, bench.PgbenchFailed) as e:
                res["errors"][name] = str(e)[:500]
                say("%s: FAILED: %s" % (name, str(e)[:500]))
                for x in list(ctx.live):  # whatever the scenario left running
                    x.stop()
        report(res, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1, default=str)
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
    finally:
        for x in reversed(list(ctx.live)):
            try:
                x.stop()
            except Exception as e:  # noqa: BLE001 - stop the rest anyway
                say("stopping %s: %s" % (getattr(x, "name", x), e))
        if ctx.pg:
            ctx.pg.stop()
        shutil.rmtree(ctx.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
