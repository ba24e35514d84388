#!/usr/bin/python3
"""
Side-by-side benchmark: pgbench against PostgreSQL directly, through
PgBouncer (Debian's pgbouncer) and through pgtenant, with the same pool size
and pool mode, in one run.  Prints TPS, the pooler's CPU time per
transaction (utime+stime from /proc), optional syscalls per transaction
(strace -c), and resident memory per idle client with N idle clients.

  contrib/bench/bench.py                 full matrix (-S and TPC-B, simple and
                                         extended, 8/64/256 clients)
  contrib/bench/bench.py --quick         -S simple 64 clients only
  contrib/bench/bench.py --syscalls      also count syscalls per transaction
  contrib/bench/bench.py --callgrind     also count user-space instructions per
                                         transaction (valgrind --tool=callgrind)
  contrib/bench/bench.py --load tpcb     TPC-B instead of -S for --quick, --syscalls
                                         and --callgrind
  contrib/bench/bench.py --runs 3        every cell 3 times, interleaved; medians
                                         and spread (min-max)
  contrib/bench/bench.py --baseline BIN  also an older pgtenant build, interleaved
                                         with the others ("before" / "after")
  contrib/bench/bench.py --tenant        pgtenant serves a pinned tenant pool

Clients log in with SCRAM-SHA-256 to both poolers (auth_file with a
plain-text password, as PgBouncer needs for SCRAM with its own secret).

Everything listens on 127.0.0.1 and stops by itself.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from conftest import Postgres, free_port, wait_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Pooler:
    def __init__(self, name, cmd, port):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=os.setsid)
        wait_port(port, proc=self.proc)
        self.pid = self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def write_config(d, section, pg, port, pool_size, extra=""):
    """The same settings for both poolers; returns the ini path."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "userlist.txt"), "w") as f:
        f.write('"app" "apppass"\n')
    ini = os.path.join(d, section + ".ini")
    with open(ini, "w") as f:
        f.write("[databases]\nappdb = host=127.0.0.1 port=%d dbname=appdb user=app password=apppass\n"
                "[%s]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
                "auth_type = scram-sha-256\nauth_file = %s/userlist.txt\npool_mode = transaction\n"
                "default_pool_size = %d\nmax_client_conn = 20000\nquery_wait_timeout = 600\n%s"
                % (pg.port, section, port, d, pool_size, extra))
    return ini


def start_pgtenant(workdir, pg, pool_size, binary, wrapper=(), name="pgtenant"):
    port = free_port()
    METRICS["port"] = free_port()
    extra = "max_db_connections = 0\nmetrics_listen = 127.0.0.1:%d\n" % METRICS["port"]
    if PGTENANT_USER["user"] == "app":
        extra += "tenant_required = no\n"
    else:
        extra += ("tenant_required = yes\ntenant_setting = app.tenant_id\ntenant_pool_size = %d\n"
                  "[tenants]\nacme = pool_size=%d\n" % (pool_size, pool_size))
    ini = write_config(os.path.join(workdir, name), "pgtenant", pg, port, pool_size, extra)
    p = Pooler(name, list(wrapper) + [binary, "-q", ini], port)
    p.metrics_port = METRICS["port"]  # later runs (callgrind) start pgtenants of their own
    return p


def start_pgbouncer(workdir, pg, pool_size, wrapper=()):
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    port = free_port()
    d = os.path.join(workdir, "pgbouncer")
    ini = write_config(d, "pgbouncer", pg, port, pool_size,
                       "logfile = %s/pgbouncer.log\nlog_connections = 0\nlog_disconnections = 0\n" % d)
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
    for p in (ini, os.path.join(d, "userlist.txt")):
        if os.geteuid() == 0:
            shutil.chown(p, "postgres")
    # PgBouncer refuses to run as root; runuser resets the fd limit, so raise it again
    cmd = (list(wrapper) + [exe, "-q", ini] if os.geteuid() != 0 else
           ["runuser", "-u", "postgres", "--", "sh", "-c", 'ulimit -n 20000; exec "$@"', "sh"] +
           list(wrapper) + [exe, "-q", ini])
    p = Pooler("pgbouncer", cmd, port)
    if os.geteuid() == 0:  # the pid of pgbouncer itself, not of runuser
        time.sleep(0.2)
        out = subprocess.run(["pgrep", "-f", "-n", "pgbouncer -q"], capture_output=True, text=True).stdout.split()
        p.pid = int(out[-1])
    return p


METRICS = {"port": None}


def scrape_ms(port, n=10):
    """Median wall time of n scrapes of pgtenant's /metrics."""
    import urllib.request
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            r.read()
        times.append((time.perf_counter() - t0) * 1000.0)
    return sorted(times)[n // 2]


# pgtenant's login user: "app", or "app.acme" with --tenant (a pinned tenant pool)
PGTENANT_USER = {"user": "app"}


def pgbench(port, host, clients, duration, select_only, protocol, transactions=None, user="app"):
    args = ["pgbench", "-h", host, "-p", str(port), "-U", user, "-M", protocol, "-c", str(clients),
            "-j", "2", "-n"]
    args += ["-t", str(transactions)] if transactions else ["-T", str(duration)]
    if select_only:
        args.append("-S")
    args.append("appdb")
    r = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, PGPASSWORD="apppass"))
    tps = re.search(r"tps = ([\d.]+) \(without initial", r.stdout)
    n = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    if r.returncode != 0 or not tps:
        raise RuntimeError("pgbench failed: %s %s" % (r.stdout[-500:], r.stderr[-1500:]))
    return float(tps.group(1)), int(n.group(1)), int(failed.group(1)) if failed else 0


def idle_clients_memory(port, n):
    """Open n logged-in idle client connections (SCRAM); return the sockets."""
    import base64
    import hashlib
    import hmac
    salted_cache = {}
    socks = []
    params = b"user\0app\0database\0appdb\0\0"
    pkt = struct.pack("!II", 8 + len(params), 196608) + params

    def recv_msg(s):
        hdr = b""
        while len(hdr) < 5:
            chunk = s.recv(5 - len(hdr))
            if not chunk:
                raise RuntimeError("idle client refused")
            hdr += chunk
        ln = struct.unpack("!I", hdr[1:5])[0] - 4
        body = b""
        while len(body) < ln:
            body += s.recv(ln - len(body))
        return hdr[:1], body

    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(pkt)
        socks.append(s)
    for s in socks:
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = "n=,r=" + nonce
        while True:
            t, body = recv_msg(s)
            if t == b"R" and struct.unpack("!I", body[:4])[0] == 10:
                first = ("n,," + first_bare).encode()
                s.sendall(b"p" + struct.pack("!I", 4 + 14 + 4 + len(first)) + b"SCRAM-SHA-256\0" +
                          struct.pack("!I", len(first)) + first)
            elif t == b"R" and struct.unpack("!I", body[:4])[0] == 11:
                server_first = body[4:].decode()
                a = dict(kv.split("=", 1) for kv in server_first.split(","))
                key = (a["s"], a["i"])
                if key not in salted_cache:  # the same salt: the same PBKDF2 (both poolers keep it)
                    salted_cache[key] = hashlib.pbkdf2_hmac("sha256", b"apppass", base64.b64decode(a["s"]),
                                                            int(a["i"]))
                salted = salted_cache[key]
                ck = hmac.new(salted, b"Client Key", "sha256").digest()
                without = "c=biws,r=" + a["r"]
                sig = hmac.new(hashlib.sha256(ck).digest(), ",".join([first_bare, server_first, without]).encode(),
                               "sha256").digest()
                proof = base64.b64encode(bytes(x ^ y for x, y in zip(ck, sig))).decode()
                final = (without + ",p=" + proof).encode()
                s.sendall(b"p" + struct.pack("!I", 4 + len(final)) + final)
            elif t == b"E":
                raise RuntimeError("idle client refused: %r" % body)
            elif t == b"Z":
                break
    return socks


def syscalls_per_xact(pid, port, clients, protocol, transactions, select_only=True, user="app"):
    out = tempfile.mktemp(prefix="strace-")
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    _, n, _ = pgbench(port, "127.0.0.1", clients, None, select_only, protocol, transactions, user=user)
    st.send_signal(signal.SIGINT)
    st.wait()
    total = 0
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+\s+)?(\w+)$", line)
            if m and m.group(3) != "total":
                total += int(m.group(1))
    os.unlink(out)
    return total / float(n)


def callgrind_per_xact(workdir, pg, pool_size, binary, which, select_only=True):
    """User-space instructions per transaction: two fresh processes under
    callgrind, one serving a short pgbench run and one a long one; the
    difference of their totals divided by the difference in transactions
    cancels startup, logins and shutdown."""
    totals = []
    for n in (200, 1200):
        d = os.path.join(workdir, "cg-%s-%d" % (which, n))
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        out = os.path.join(d, "callgrind.out")
        wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
        p = (start_pgbouncer(workdir, pg, pool_size, wrapper) if which == "pgbouncer"
             else start_pgtenant(workdir, pg, pool_size, binary, wrapper))
        try:
            pgbench(p.port, "127.0.0.1", 8, None, select_only, "simple", n,
                    user=PGTENANT_USER["user"] if which != "pgbouncer" else "app")
        finally:
            p.stop()
            for _ in range(200):
                if os.path.exists(out) and os.path.getsize(out) > 0:
                    break
                time.sleep(0.05)
        time.sleep(0.5)
        with open(out) as f:
            m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
        totals.append(int(m.group(1)))
    return (totals[1] - totals[0]) / (8.0 * 1000)


def spread(values):
    v = sorted(values)
    return v[len(v) // 2], v[0], v[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--pool-size", type=int, default=20)
    ap.add_argument("--idle-clients", type=int, default=5000)
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--load", choices=("select", "tpcb"), default="select",
                    help="the load of --quick, --syscalls and --callgrind")
    ap.add_argument("--runs", type=int, default=1, help="interleaved runs per cell (medians and spread)")
    ap.add_argument("--baseline", help="an older pgtenant binary to run interleaved as 'before'")
    ap.add_argument("--no-pgbouncer", action="store_true")
    ap.add_argument("--tenant", action="store_true",
                    help="pgtenant serves a pinned tenant pool (user app.acme) instead of a plain one")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "pgtenant"))
    args = ap.parse_args()
    if args.tenant:
        PGTENANT_USER["user"] = "app.acme"
    select_only = args.load == "select"

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    pg = Postgres()
    workdir = tempfile.mkdtemp(prefix="pgt-bench-")
    os.chmod(workdir, 0o755)
    poolers = []
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", "-h", pg.sockdir, "-p", str(pg.port), "-U", "app",
                        "appdb"], check=True, capture_output=True, env=dict(os.environ, PGPASSWORD="apppass"))
        if not args.no_pgbouncer:
            poolers.append(start_pgbouncer(workdir, pg, args.pool_size))
        if args.baseline:
            poolers.append(start_pgtenant(workdir, pg, args.pool_size, args.baseline, name="before"))
        poolers.append(start_pgtenant(workdir, pg, args.pool_size, args.binary))
        version = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        print("pool_mode=transaction pool_size=%d duration=%ds runs=%d, SCRAM, %s, pgtenant %s%s" %
              (args.pool_size, args.duration, args.runs, version,
               subprocess.run([args.binary, "-V"], capture_output=True, text=True).stdout.split()[-1],
               ", tenant pool" if args.tenant else ""))
        matrix = [(select_only, "simple", 64)] if args.quick else [
            (sel, proto, c) for sel in (True, False) for proto in ("simple", "extended") for c in (8, 64, 256)]
        names = [p.name for p in poolers]
        hdr = "%-7s %-8s %4s | %9s | " % ("load", "protocol", "cl", "direct") + " | ".join(
            "%9s %7s" % (n, "us/tx") for n in names)
        if "pgbouncer" in names:
            hdr += " | %6s %6s" % ("ratio", "cpu")
        print(hdr)
        print("-" * len(hdr))
        for sel, proto, clients in matrix:
            runs = {}
            for _ in range(args.runs):  # interleaved: each run visits every pooler once
                runs.setdefault("direct", []).append(pgbench(pg.port, "127.0.0.1", clients, args.duration, sel,
                                                             proto)[0])
                for p in poolers:
                    c0 = cpu_seconds(p.pid)
                    tps, n, failed = pgbench(p.port, "127.0.0.1", clients, args.duration, sel, proto,
                                             user=PGTENANT_USER["user"] if p.name != "pgbouncer" else "app")
                    runs.setdefault(p.name, []).append((tps, (cpu_seconds(p.pid) - c0) / n * 1e6, failed))
            row = "%-7s %-8s %4d | %9.0f | " % ("select" if sel else "tpcb", proto, clients,
                                                spread(runs["direct"])[0])
            med = {}
            for name in names:
                tps = spread([r[0] for r in runs[name]])
                cpu = spread([r[1] for r in runs[name]])
                med[name] = (tps[0], cpu[0])
                row += "%9.0f %7.1f | " % (tps[0], cpu[0])
                if any(r[2] for r in runs[name]):
                    row += "FAILED TX "
            if "pgbouncer" in names:
                b, t = med["pgbouncer"], med["pgtenant"]
                row += "%6.2f %6.2f" % (t[0] / b[0], t[1] / b[1] if b[1] else 0)
            print(row)
            if args.runs > 1:
                print("        spread (min-max TPS): " + ", ".join(
                    "%s %.0f-%.0f" % (n, spread([r[0] for r in runs[n]])[1], spread([r[0] for r in runs[n]])[2])
                    for n in names))
            sys.stdout.flush()
        if "pgbouncer" in names:
            print("ratio = pgtenant TPS / PgBouncer TPS; cpu = pgtenant CPU per transaction / PgBouncer's")
        if args.syscalls:
            for p in poolers:
                vals = [syscalls_per_xact(p.pid, p.port, 64, "simple", 2000 if select_only else 100, select_only,
                                          PGTENANT_USER["user"] if p.name != "pgbouncer" else "app")
                        for _ in range(args.runs)]
                m = spread(vals)
                print("%-9s syscalls per transaction (%s simple, 64 clients): %.2f (%.2f-%.2f)" %
                      (p.name, args.load, m[0], m[1], m[2]))
        if args.callgrind:
            for p in poolers:
                binary = args.baseline if p.name == "before" else args.binary
                print("%-9s user-space instructions per transaction (callgrind, %s simple, 8 clients): %.0f" %
                      (p.name, args.load,
                       callgrind_per_xact(workdir, pg, args.pool_size, binary, p.name, select_only)))
        if args.idle_clients:
            for p in poolers:
                before = rss_kb(p.pid)
                socks = idle_clients_memory(p.port, args.idle_clients)
                time.sleep(0.5)
                after = rss_kb(p.pid)
                print("%-9s %d idle clients: RSS %d KiB -> %d KiB, %.0f bytes per idle client" %
                      (p.name, args.idle_clients, before, after, (after - before) * 1024.0 / args.idle_clients))
                if p.name == "pgtenant":
                    print("pgtenant  /metrics scrape with %d idle clients: %.2f ms (median of 10)" %
                          (args.idle_clients, scrape_ms(p.metrics_port)))
                for s in socks:
                    s.close()
                time.sleep(0.5)
    finally:
        for p in poolers:
            p.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
