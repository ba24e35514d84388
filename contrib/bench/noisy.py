#!/usr/bin/python3
"""
Noisy-neighbour benchmark.  Tenant A floods with 60 clients running 200 ms
transactions; tenant B runs short queries.  Prints tenant B's p50/p99
latency:
  idle                          B alone, through pgtenant
  flood, quotas                 A pool_size=10, B pool_size=5, room for both
  flood, overcommitted          A and B pool_size=20, max_db_connections=20
  PgBouncer, one shared pool    A and B in one pool of 20 (PgBouncer has no tenants)
Targets (issue 3): B's p99 under the flood with quotas <= 3x its idle p99,
and under 100 ms with the overcommitted pool.

  contrib/bench/noisy.py [--duration 8]
"""
import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
sys.path.insert(0, HERE)
import psycopg  # noqa: E402

from bench import Pooler, start_pgbouncer, write_config  # noqa: E402
from conftest import Postgres, free_port  # noqa: E402


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100.0))] * 1000.0


def run(port, user_a, user_b, opts_a, opts_b, duration, flood):
    stop = time.time() + duration
    errors = []

    def flooder():
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=user_a, dbname="appdb", password="apppass",
                                 options=opts_a, autocommit=True, prepare_threshold=None) as c:
                while time.time() < stop:
                    c.execute("select pg_sleep(0.2)")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=flooder) for _ in range(60 if flood else 0)]
    for t in threads:
        t.start()
    time.sleep(1.0 if flood else 0)  # let the flood fill the pools
    lat = []
    with psycopg.connect(host="127.0.0.1", port=port, user=user_b, dbname="appdb", password="apppass",
                         options=opts_b, autocommit=True, prepare_threshold=None) as c:
        while time.time() < stop:
            t0 = time.perf_counter()
            c.execute("select count(*) from items")
            lat.append(time.perf_counter() - t0)
            time.sleep(0.005)
    for t in threads:
        t.join()
    if errors:
        print("  errors:", errors[:3])
    return lat


def start_pgtenant(workdir, pg, name, settings, tenants):
    port = free_port()
    extra = "tenant_required = yes\nquery_wait_timeout = 60\n" + "".join("%s = %s\n" % kv for kv in settings.items())
    extra += "[tenants]\n" + "".join("%s = %s\n" % kv for kv in tenants.items())
    ini = write_config(os.path.join(workdir, name), "pgtenant", pg, port, 20, extra)
    return Pooler("pgtenant", [os.path.join(ROOT, "build", "pgtenant"), "-q", ini], port)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8)
    args = ap.parse_args()
    import tempfile
    pg = Postgres()
    workdir = tempfile.mkdtemp(prefix="pgt-noisy-")
    os.chmod(workdir, 0o755)
    with pg.connect("appdb", "app") as c:
        c.execute("create table public.items as select g as id from generate_series(1, 100) g")
        for t in ("a", "b"):
            c.execute("create schema tenant_%s" % t)
            c.execute("create table tenant_%s.items as select g as id from generate_series(1, 100) g" % t)
    results = []
    try:
        scenarios = [
            ("idle (B alone)", {"max_db_connections": "100"}, {"a": "pool_size=10", "b": "pool_size=5"}, False),
            ("flood, quotas", {"max_db_connections": "100"}, {"a": "pool_size=10", "b": "pool_size=5"}, True),
            ("flood, overcommitted", {"max_db_connections": "20"}, {"a": "pool_size=20", "b": "pool_size=20"},
             True),
        ]
        for i, (name, settings, tenants, flood) in enumerate(scenarios):
            p = start_pgtenant(workdir, pg, "t%d" % i, settings, tenants)
            try:
                lat = run(p.port, "app", "app", "-c tenant=a", "-c tenant=b", args.duration, flood)
            finally:
                p.stop()
            results.append((name, lat))
        b = start_pgbouncer(workdir, pg, 20)
        try:
            lat = run(b.port, "app", "app", "", "", args.duration, True)
        finally:
            b.stop()
        results.append(("PgBouncer, one shared pool", lat))
    finally:
        pg.stop()
    print("%-28s %8s %9s %9s" % ("tenant B latency", "queries", "p50 ms", "p99 ms"))
    for name, lat in results:
        print("%-28s %8d %9.2f %9.2f" % (name, len(lat), pct(lat, 50), pct(lat, 99)))
    idle99 = pct(results[0][1], 99)
    q99 = pct(results[1][1], 99)
    o99 = pct(results[2][1], 99)
    print("target: quotas p99 <= 3x idle p99: %.2f <= %.2f %s" % (q99, 3 * idle99, "OK" if q99 <= 3 * idle99 else "MISSED"))
    print("target: overcommitted p99 < 100 ms: %.2f %s" % (o99, "OK" if o99 < 100 else "MISSED"))


if __name__ == "__main__":
    main()
