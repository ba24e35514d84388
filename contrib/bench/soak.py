#!/usr/bin/python3
"""
Soak benchmark (not a test of the default suite): does pgtenant come back
to where it started after many short connections, PostgreSQL restarts and
reloads?  Starts its own PostgreSQL (as bench.py does: initdb + pg_ctl on a
free port in a temporary directory, as the postgres user via runuser when
run as root) and pgtenant (--binary, default build/pgtenant) in transaction
mode with SCRAM, 50 tenants t00..t49 (schemas tenant_t00..tenant_t49 with a
small table each; t00..t24 in [tenants], t25..t49 dynamic through
unknown_tenant = allow), tenant_pool_size 2, server_idle_timeout 15 s.
Everything listens on 127.0.0.1 and stops by itself.

  1. Warm-up: every tenant gets one pgbench -C run (2 clients, 5
     transactions) and one Python client at once, then one RELOAD with
     unchanged settings, then pgtenant is left idle for server_idle_timeout
     + 10 s so that its server connections close.  The BASELINE sample is
     taken then: after the first wave of connections and the first reload
     have come and gone, so that what is allocated once is in it (each
     tenant's pool and state, the heap grown to the wave's peak, libevent's
     tables grown to the peak fd, and the first reload's heap growth: a
     reload builds the new server-side TLS context, which loads the
     system's CA bundle, about 0.9 MB of OpenSSL allocations, while the
     old one is still alive; the old one's memory is freed but stays in
     the heap for the next reload.  Measured without load: +0.9 MB at the
     first reload, +0.2 MB over the next 20, then flat to 200).  The
     samples before any connection ("cold"), after the wave and after the
     reload are printed too; the verdict is against BASELINE.
  2. Load for --duration seconds (default 600), --clients client
     connections in all (default 10,000; paced evenly over the run; the
     loops stop at the count or at the end of the duration, whichever
     comes first):
       - 80%: pgbench -C (a new connection per transaction), --pgbench
         processes at once (default 5), each run for the next tenant in
         turn (PGOPTIONS="-c tenant=tNN"), -c 2 -t 20 of a script that reads
         and updates the tenant's table;
       - 20%: Python clients (psycopg, --py threads, default 2): connect,
         SET statement_timeout, a parameterised query, an INSERT, then a
         transaction that commits, rolls back, is left open at disconnect,
         or ends with the socket shut down mid-transaction (no Terminate).
  3. Disturbances: PostgreSQL is restarted (pg_ctl restart -m fast) every
     --restart-every seconds (default 120, first at 120 s + 5 s), and
     pgtenant reloaded every --reload-every seconds (default 60, first at
     35 s), alternately by RELOAD on the admin console and by SIGHUP, each
     time switching tenant_pool_size between 2 and 3 and t00's pool_size
     between 2 and 4 in the rewritten ini.
  4. After the load: idle until SHOW SERVERS is back at the baseline's
     count (at most server_idle_timeout + 45 s), then the END sample.

Every 10 s a sample: pgtenant's RSS (VmRSS) and open fds (/proc/PID/fd),
SHOW SERVERS and SHOW CLIENTS row counts (the sampler's own admin
connection, kept open the whole run, is one of the clients and one of the
fds, in every sample alike), client backends of user app in
pg_stat_activity, and total_xact_count summed over SHOW STATS_TOTALS.

Verdict "flat" when, END against BASELINE: RSS within +-1%, the same number
of fds and the same number of server connections (SHOW SERVERS and
pg_stat_activity); else "NOT flat" with the numbers.

  contrib/bench/soak.py                      the 10-minute soak
  contrib/bench/soak.py --duration 60 --clients 1000
                                             a quick run to debug
  contrib/bench/soak.py --csv FILE           also every sample as CSV
"""
import argparse
import csv
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from conftest import PG_BIN, Postgres, as_pg_user, free_port, wait_port  # noqa: E402

import psycopg  # noqa: E402

NTENANTS = 50
TENANTS = ["t%02d" % i for i in range(NTENANTS)]
STATIC = TENANTS[:25]  # in [tenants]; the others are dynamic (unknown_tenant = allow)
PASSWORD = "apppass"
ADMIN_PASSWORD = "adminpass"
IDLE_TIMEOUT = 15
PGBENCH_CLIENTS, PGBENCH_XACTS = 2, 20  # one pgbench run: 40 connections
WAVE_XACTS = 5  # the warm-up's runs: 10 connections each

SCRIPT = """\\set id random(1, 100)
SELECT v FROM items WHERE id = :id;
UPDATE items SET v = v + 1 WHERE id = :id;
"""


def say(*a):
    print(*a, flush=True)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {"pgbench_runs": 0, "pgbench_failed_runs": 0, "pgbench_conns": 0, "pgbench_xacts": 0,
                  "py_conns": 0, "py_failed": 0, "py_commit": 0, "py_rollback": 0, "py_open": 0,
                  "py_abrupt": 0}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] += n

    def get(self, key):
        with self.lock:
            return self.c[key]

    def conns(self):
        with self.lock:
            return self.c["pgbench_conns"] + self.c["py_conns"]


class Soak:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.counters = Counters()
        self.pool_size = 2
        self.t00_pool = 2
        self.reloads = 0
        self.restarts = 0
        self.restart_secs = []
        self.admin_conn = None
        self.pg = None
        self.proc = None
        self.workdir = tempfile.mkdtemp(prefix="pgt-soak-")
        os.chmod(self.workdir, 0o755)
        self.next_tenant = 0
        self.tlock = threading.Lock()

    # ------------------------------------------------------------ setup

    def write_ini(self):
        with open(self.userlist, "w") as f:
            f.write('"app" "%s"\n"admin" "%s"\n' % (PASSWORD, ADMIN_PASSWORD))
        tmp = self.ini + ".tmp"
        with open(tmp, "w") as f:
            f.write("[databases]\nappdb = host=127.0.0.1 port=%d dbname=appdb user=app password=%s\n"
                    % (self.pg.port, PASSWORD))
            f.write("[pgtenant]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
                    "logfile = %s\nauth_type = scram-sha-256\nauth_file = %s\nadmin_users = admin\n"
                    "pool_mode = transaction\nmax_client_conn = 2000\ndefault_pool_size = 20\n"
                    "max_db_connections = 0\ntenant_required = yes\nunknown_tenant = allow\n"
                    "tenant_pool_size = %d\ntenant_max_client_conn = 200\nserver_idle_timeout = %d\n"
                    "server_login_retry = 1\nquery_wait_timeout = 30\n"
                    % (self.port, self.logfile, self.userlist, self.pool_size, IDLE_TIMEOUT))
            f.write("[tenants]\n")
            for t in STATIC:
                f.write("%s = pool_size=%d\n" % (t, self.t00_pool if t == "t00" else 2))
        os.replace(tmp, self.ini)

    def setup(self):
        a = self.args
        self.pg = Postgres()
        for t in TENANTS:
            self.pg.sql("CREATE SCHEMA tenant_%s AUTHORIZATION app; "
                        "CREATE TABLE tenant_%s.items (id int PRIMARY KEY, v int NOT NULL); "
                        "INSERT INTO tenant_%s.items SELECT g, 0 FROM generate_series(1, 100) g; "
                        "ALTER TABLE tenant_%s.items OWNER TO app" % (t, t, t, t), dbname="appdb")
        self.script = os.path.join(self.workdir, "soak.sql")
        with open(self.script, "w") as f:
            f.write(SCRIPT)
        self.port = free_port()
        self.ini = os.path.join(self.workdir, "pgtenant.ini")
        self.userlist = os.path.join(self.workdir, "userlist.txt")
        self.logfile = os.path.join(self.workdir, "pgtenant.log")
        self.write_ini()
        r = subprocess.run([a.binary, "--check", self.ini], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("pgtenant --check: %s" % (r.stderr + r.stdout).strip()[-400:])
        self.proc = subprocess.Popen([a.binary, "-q", self.ini], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        self.pid = self.proc.pid
        self.version = subprocess.run([a.binary, "-V"], capture_output=True, text=True).stdout.strip()

    # ------------------------------------------------------------ measuring

    def admin(self, query):
        """Rows of an admin console command, on the sampler's own connection."""
        for attempt in (0, 1):
            try:
                if self.admin_conn is None or self.admin_conn.closed:
                    self.admin_conn = psycopg.connect(
                        host="127.0.0.1", port=self.port, user="admin", password=ADMIN_PASSWORD,
                        dbname="pgtenant", autocommit=True, connect_timeout=10)
                cur = self.admin_conn.execute(query, prepare=False)
                if cur.description is None:
                    return []
                cols = [d.name for d in cur.description]
                return [dict(zip(cols, r)) for r in cur.fetchall()]
            except psycopg.Error:
                if attempt:
                    raise
                try:
                    if self.admin_conn is not None:
                        self.admin_conn.close()
                except psycopg.Error:
                    pass
                self.admin_conn = None

    def backends(self):
        try:
            return self.pg.backends()
        except psycopg.Error:
            return None  # PostgreSQL restarting

    def sample(self, t, label=""):
        """One sample; the fds and RSS are read before the admin queries."""
        rss, fds = rss_kb(self.pid), nfds(self.pid)
        s = {"t": round(t), "label": label, "rss_kb": rss, "fds": fds}
        try:
            s["servers"] = len(self.admin("SHOW SERVERS"))
            s["clients"] = len(self.admin("SHOW CLIENTS"))
            s["xacts"] = sum(int(r["xact_count"]) for r in self.admin("SHOW STATS_TOTALS"))
        except psycopg.Error as e:
            s["servers"] = s["clients"] = s["xacts"] = None
            s["error"] = str(e).strip()[:100]
        s["pg_backends"] = self.backends()
        s["conns"] = self.counters.conns()
        return s

    # ------------------------------------------------------------ load

    def tenant_turn(self):
        with self.tlock:
            t = TENANTS[self.next_tenant % NTENANTS]
            self.next_tenant += 1
            return t

    def pgbench_run(self, tenant, xacts=PGBENCH_XACTS, timeout=120):
        env = dict(os.environ, PGPASSWORD=PASSWORD, PGOPTIONS="-c tenant=%s" % tenant)
        cmd = ["pgbench", "-n", "-C", "-M", "simple", "-h", "127.0.0.1", "-p", str(self.port), "-U", "app",
               "-c", str(PGBENCH_CLIENTS), "-j", "1", "-t", str(xacts), "-f", self.script, "appdb"]
        self.counters.add("pgbench_runs")
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
            out, rc = r.stdout, r.returncode
        except subprocess.TimeoutExpired:
            out, rc = "", -1
        m = re.search(r"number of transactions actually processed: (\d+)", out)
        done = int(m.group(1)) if m else 0
        self.counters.add("pgbench_xacts", done)
        # each transaction is a connection; a failed run's clients each also tried one that failed
        self.counters.add("pgbench_conns", done + (PGBENCH_CLIENTS if rc != 0 else 0))
        if rc != 0:
            self.counters.add("pgbench_failed_runs")
            err = re.search(r"^.*\b(?:ERROR|FATAL|error):.*$", r.stderr if rc != -1 else "", re.M)
            self.last_pgbench_error = err.group(0).strip()[:160] if err else "rc %d" % rc

    last_pgbench_error = None

    def py_client(self, tenant, rng):
        self.counters.add("py_conns")
        try:
            conn = psycopg.connect(host="127.0.0.1", port=self.port, user="app", password=PASSWORD,
                                   dbname="appdb", options="-c tenant=%s" % tenant, autocommit=True,
                                   prepare_threshold=None, connect_timeout=10)
        except psycopg.Error:
            self.counters.add("py_failed")
            return
        try:
            conn.execute("SET statement_timeout = '5s'")
            conn.execute("SELECT count(*), current_setting('search_path') FROM items").fetchone()
            key = rng.randint(1, 100)
            conn.execute("SELECT v FROM items WHERE id = %s", (key,)).fetchone()
            conn.execute("INSERT INTO items VALUES (%s, 0) ON CONFLICT (id) DO UPDATE SET v = items.v + 1",
                         (1000 + rng.randint(1, 50),))
            conn.execute("BEGIN")
            conn.execute("UPDATE items SET v = v + 1 WHERE id = %s", (key,))
            conn.execute("SELECT pg_sleep(0.01)")
            end = rng.random()
            if end < 0.4:
                conn.execute("COMMIT")
                self.counters.add("py_commit")
            elif end < 0.6:
                conn.execute("ROLLBACK")
                self.counters.add("py_rollback")
            elif end < 0.8:
                self.counters.add("py_open")  # closed (Terminate) inside the transaction
            else:
                # abrupt: the socket is shut down mid-transaction, no Terminate
                s = socket.socket(fileno=os.dup(conn.fileno()))
                s.shutdown(socket.SHUT_RDWR)
                s.close()
                self.counters.add("py_abrupt")
        except psycopg.Error:
            self.counters.add("py_failed")
        finally:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def warmup(self):
        """The first wave: one pgbench run and one Python client per tenant."""
        rng = random.Random(1)
        threads = []
        for i in range(self.args.pgbench):
            mine = TENANTS[i::self.args.pgbench]
            threads.append(threading.Thread(target=lambda m=mine: [self.pgbench_run(t, WAVE_XACTS) for t in m]))
        threads.append(threading.Thread(target=lambda: [self.py_client(t, rng) for t in TENANTS]))
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    # ------------------------------------------------------------ disturbances

    def restart_pg(self):
        t0 = time.monotonic()
        r = subprocess.run(as_pg_user() + [os.path.join(PG_BIN, "pg_ctl"), "-D", self.pg.data, "-l",
                                           os.path.join(self.pg.dir, "log"), "-m", "fast", "-w", "restart"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            say("pg_ctl restart failed: %s" % r.stderr.strip()[-300:])
        self.restarts += 1
        self.restart_secs.append(time.monotonic() - t0)

    def reload(self):
        self.pool_size = 3 if self.pool_size == 2 else 2
        self.t00_pool = 4 if self.t00_pool == 2 else 2
        self.write_ini()
        if self.reloads % 2 == 0:
            self.admin("RELOAD")
            how = "RELOAD"
        else:
            os.kill(self.pid, signal.SIGHUP)
            how = "SIGHUP"
        self.reloads += 1
        return how

    # ------------------------------------------------------------ run

    def run(self):
        a = self.args
        samples = []
        w = csv.writer(open(a.csv, "w", newline="")) if a.csv else None
        fields = ["t", "label", "rss_kb", "fds", "servers", "pg_backends", "clients", "xacts", "conns"]
        if w:
            w.writerow(fields)
        hdr = "%6s %-9s %9s %5s %7s %8s %7s %9s %7s  %s" % ("t(s)", "phase", "RSS(KiB)", "fds", "servers",
                                                           "backends", "clients", "xacts", "conns", "events")
        events = []

        def show(s):
            samples.append(s)
            if w:
                w.writerow([s.get(k) for k in fields])
            say("%6s %-9s %9d %5d %7s %8s %7s %9s %7d  %s" % (
                s["t"], s["label"], s["rss_kb"], s["fds"], s["servers"], s["pg_backends"], s["clients"],
                s["xacts"], s["conns"], "; ".join(events) + (" " + s["error"] if "error" in s else "")))
            del events[:]

        say("%s, PostgreSQL %s, %d CPUs (shared with other work), 50 tenants, transaction mode, SCRAM, "
            "tenant_pool_size 2/3, server_idle_timeout %d s" %
            (self.version, self.pg.sql("SHOW server_version")[0][0], os.cpu_count(), IDLE_TIMEOUT))
        say("load %d s, %d client connections planned (%d%% pgbench -C, %d processes; the rest Python, %d "
            "threads), restart every %d s, reload every %d s" %
            (a.duration, a.clients, 80, a.pgbench, a.py, a.restart_every, a.reload_every))
        say(hdr)
        show(self.sample(0, "cold"))
        self.warmup()
        self.warm_conns = self.counters.conns()
        events.append("warm-up wave: %d connections" % self.warm_conns)
        show(self.sample(0, "wave"))
        # a first reload belongs to the warm-up too: it grows the heap once by
        # ~0.9 MB (the new TLS context's CA bundle next to the old one's; see
        # the header), which is not a leak per reload
        self.admin("RELOAD")
        time.sleep(2)
        events.append("warm-up RELOAD (same settings)")
        show(self.sample(0, "reload"))
        time.sleep(IDLE_TIMEOUT + 8)
        base = self.sample(0, "BASELINE")
        show(base)

        start = time.monotonic()
        deadline = start + a.duration
        budget_pg = int(a.clients * 0.8) + self.counters.get("pgbench_conns")
        budget_py = a.clients - int(a.clients * 0.8) + self.counters.get("py_conns")
        # pacing counts from the warm-up's totals on
        base_pg, base_py = self.counters.get("pgbench_conns"), self.counters.get("py_conns")
        threads = []
        for i in range(a.pgbench):
            threads.append(threading.Thread(target=self.pgbench_loop_from,
                                            args=(start, deadline, a.duration, base_pg, budget_pg)))
        for i in range(a.py):
            threads.append(threading.Thread(target=self.py_loop_from,
                                            args=(start, deadline, a.duration, base_py, budget_py, 100 + i)))
        for th in threads:
            th.start()
        next_sample, next_reload, next_restart = start + 10, start + a.reload_every / 2 + 5, start + a.restart_every + 5
        try:
            while True:
                now = time.monotonic()
                if now >= deadline and not any(th.is_alive() for th in threads):
                    break
                if now >= next_restart and now < deadline - 10:
                    self.restart_pg()
                    events.append("PostgreSQL restarted (%.1f s)" % self.restart_secs[-1])
                    next_restart += a.restart_every
                    continue
                if now >= next_reload and now < deadline - 10:
                    try:
                        how = self.reload()
                        events.append("%s: tenant_pool_size %d, t00 pool_size %d" %
                                      (how, self.pool_size, self.t00_pool))
                    except psycopg.Error as e:
                        events.append("RELOAD failed: %s" % str(e).strip()[:80])
                    next_reload += a.reload_every
                    continue
                if now >= next_sample:
                    show(self.sample(now - start, "load"))
                    next_sample += 10
                    continue
                time.sleep(min(0.2, max(0.0, min(next_sample, next_reload, next_restart) - now)))
        finally:
            self.stop.set()
            for th in threads:
                th.join()
        load_end = time.monotonic()
        events.append("load stopped at %.0f s" % (load_end - start))
        show(self.sample(load_end - start, "stopped"))
        # idle until the server connections drain to the baseline's count
        limit = load_end + IDLE_TIMEOUT + 45
        next_sample = load_end + 10
        end = None
        while True:
            time.sleep(max(0.0, next_sample - time.monotonic()))
            next_sample += 10
            s = self.sample(time.monotonic() - start, "idle")
            drained = s["servers"] == base["servers"] and s["pg_backends"] == base["pg_backends"]
            if (drained and time.monotonic() >= load_end + IDLE_TIMEOUT + 5) or time.monotonic() >= limit:
                s["label"] = "END"
                end = s
                show(s)
                break
            show(s)
        return samples, base, end

    def pgbench_loop_from(self, start, deadline, duration, base, budget):
        per = PGBENCH_CLIENTS * PGBENCH_XACTS
        while self.paced_from(per, deadline, start, duration, "pgbench_conns", base, budget):
            self.pgbench_run(self.tenant_turn())

    def py_loop_from(self, start, deadline, duration, base, budget, seed):
        rng = random.Random(seed)
        while self.paced_from(1, deadline, start, duration, "py_conns", base, budget):
            self.py_client(self.tenant_turn(), rng)

    def paced_from(self, per, deadline, start, duration, counter, base, budget):
        """Whether a loop may start another unit (per connections) now: the
        count is behind the even pace from base to budget over duration and
        the unit stays within budget; otherwise waits, and says no at the
        deadline or on stop."""
        while not self.stop.is_set() and time.monotonic() < deadline:
            n = self.counters.get(counter)
            if n + per > budget:
                return False
            due = base + (budget - base) * min(1.0, (time.monotonic() - start + 5) / duration)
            if n + per <= due:
                return True
            time.sleep(0.1)
        return False

    def cleanup(self):
        if self.admin_conn is not None:
            try:
                self.admin_conn.close()
            except psycopg.Error:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pg is not None:
            self.pg.stop()
        if self.args.keep:
            say("kept %s" % self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def summary(soak, samples, base, end):
    c = soak.counters.c
    say("")
    say("client connections: %d, %d of them in the warm-up wave (pgbench -C %d in %d runs, %d runs failed; "
        "Python %d: %d failed, %d committed, %d rolled back, %d closed inside a transaction, %d shut down "
        "abruptly mid-transaction)" %
        (c["pgbench_conns"] + c["py_conns"], soak.warm_conns, c["pgbench_conns"], c["pgbench_runs"],
         c["pgbench_failed_runs"], c["py_conns"], c["py_failed"], c["py_commit"], c["py_rollback"], c["py_open"],
         c["py_abrupt"]))
    if soak.last_pgbench_error:
        say("last pgbench error: %s" % soak.last_pgbench_error)
    say("PostgreSQL restarts: %d (%s s), reloads: %d" %
        (soak.restarts, ", ".join("%.1f" % x for x in soak.restart_secs), soak.reloads))
    peak = max(samples, key=lambda s: s["rss_kb"])
    say("peak RSS %d KiB at t=%s (%s)" % (peak["rss_kb"], peak["t"], peak["label"]))
    alive = soak.proc.poll() is None
    rows = [("RSS (KiB)", "rss_kb"), ("open fds", "fds"), ("server connections (SHOW SERVERS)", "servers"),
            ("client backends (pg_stat_activity)", "pg_backends"), ("clients (SHOW CLIENTS)", "clients"),
            ("transactions (SHOW STATS_TOTALS)", "xacts")]
    say("%-36s %10s %10s %10s" % ("", "cold", "BASELINE", "END"))
    for name, k in rows:
        say("%-36s %10s %10s %10s" % (name, samples[0][k], base[k], end[k]))
    problems = []
    if not alive:
        problems.append("pgtenant exited (%s)" % soak.proc.returncode)
    drss = (end["rss_kb"] - base["rss_kb"]) * 100.0 / base["rss_kb"]
    if abs(drss) > 1.0:
        problems.append("RSS %+.2f%% (%d -> %d KiB)" % (drss, base["rss_kb"], end["rss_kb"]))
    for name, k in rows[1:4]:
        if end[k] != base[k]:
            problems.append("%s %s -> %s" % (name, base[k], end[k]))
    say("RSS END vs BASELINE: %+.2f%% (%+d KiB)" % (drss, end["rss_kb"] - base["rss_kb"]))
    say("verdict: %s" % ("flat" if not problems else "NOT flat: " + "; ".join(problems)))
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="load seconds (default %(default)s)")
    ap.add_argument("--clients", type=int, default=10000,
                    help="client connections over the load (default %(default)s)")
    ap.add_argument("--pgbench", type=int, default=5, help="pgbench processes at once (default %(default)s)")
    ap.add_argument("--py", type=int, default=2, help="Python client threads (default %(default)s)")
    ap.add_argument("--restart-every", type=float, default=120)
    ap.add_argument("--reload-every", type=float, default=60)
    ap.add_argument("--csv", metavar="FILE", help="write every sample there")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (pgtenant's log)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "pgtenant"))
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    if not os.access(args.binary, os.X_OK):
        ap.error("no pgtenant binary at %s (build it, or --binary)" % args.binary)
    if args.duration < 20 or args.clients < 100 or args.pgbench < 1 or args.py < 1:
        ap.error("--duration at least 20, --clients at least 100, --pgbench and --py at least 1")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    soak = Soak(args)
    ok = False
    try:
        soak.setup()
        samples, base, end = soak.run()
        ok = summary(soak, samples, base, end)
    except KeyboardInterrupt:
        soak.stop.set()
        say("interrupted")
        sys.exit(130)
    finally:
        soak.stop.set()
        soak.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
