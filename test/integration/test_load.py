"""Concurrency: 1,000 clients over a pool of 10, and pgbench through
transaction mode with the simple and the extended protocol."""
import asyncio
import os
import re
import subprocess

import asyncpg
import pytest


def test_1000_concurrent_clients_over_pool_of_10(bouncer_factory, pg):
    b = bouncer_factory(settings={"auth_type": "trust", "default_pool_size": "10", "max_client_conn": "2000",
                                  "query_wait_timeout": "60"})

    async def client(i, start):
        conn = await asyncpg.connect(host="127.0.0.1", port=b.port, user="trustuser", database="unixdb",
                                     statement_cache_size=0, ssl=False, timeout=60)
        await start.wait()
        pids = set()
        for _ in range(3):
            v, pid = await conn.fetchrow("select $1::int * 2, pg_backend_pid()", i)
            assert v == 2 * i
            pids.add(pid)
        await conn.close()
        return pids

    async def main():
        start = asyncio.Event()
        tasks = [asyncio.create_task(client(i, start)) for i in range(1000)]
        # count logged-in clients: a row appears at accept(), before the startup packet names the user
        while (len([c for c in b.admin("SHOW CLIENTS") if c["user"] == "trustuser"]) < 1000
               and not any(t.done() for t in tasks)):
            await asyncio.sleep(0.2)
        clients = b.admin("SHOW CLIENTS")
        start.set()
        return clients, await asyncio.gather(*tasks)

    clients, results = asyncio.run(main())
    assert len([c for c in clients if c["user"] == "trustuser"]) == 1000
    backends = set().union(*results)
    assert 1 <= len(backends) <= 10, len(backends)
    assert pg.backends("trustuser") <= 10


def pgbench(b, *args):
    env = dict(os.environ, PGPASSWORD=b.users["app"])
    return subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(b.port), "-U", "app"] + list(args) + ["appdb"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pgbench_db(pg):
    env = dict(os.environ, PGPASSWORD="apppass")
    subprocess.run(["pgbench", "-i", "-q", "-s", "2", "-h", pg.sockdir, "-p", str(pg.port), "-U", "app", "appdb"],
                   env=env, check=True, capture_output=True)


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_pgbench_transaction_mode(bouncer_factory, pgbench_db, protocol):
    b = bouncer_factory(settings={"default_pool_size": "20", "max_client_conn": "500"})
    r = pgbench(b, "-c", "100", "-j", "2", "-T", "20", "-S", "-M", protocol)
    assert r.returncode == 0, r.stderr[-3000:]
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    processed = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    assert failed and int(failed.group(1)) == 0, r.stdout
    assert processed and int(processed.group(1)) > 1000, r.stdout
    assert "error" not in r.stderr.lower(), r.stderr[-3000:]
    stats = [p for p in b.admin("SHOW POOLS") if p["database"] == "appdb"][0]
    assert stats["sv_active"] + stats["sv_idle"] <= 20
