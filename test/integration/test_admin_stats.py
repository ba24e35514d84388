"""Admin console result sets: PgBouncer 1.25's column names, order and types
for every SHOW command, statistics after a known workload, stats_period
averages, and the queries prometheus-community/pgbouncer_exporter sends."""
import time

import psycopg
import pytest

import pgwire

TEXT, INT4, INT8, NUMERIC = 25, 23, 20, 1700

STAT_NAMES = ["server_assignment_count", "xact_count", "query_count", "received", "sent", "xact_time",
              "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count"]
STATS_COLS = ([("database", TEXT)]
              + [("total_" + n, NUMERIC) for n in STAT_NAMES]
              + [("avg_" + {"received": "recv"}.get(n, n), NUMERIC) for n in STAT_NAMES])
CONN_COLS = [("type", TEXT), ("user", TEXT), ("database", TEXT), ("replication", TEXT), ("state", TEXT),
             ("addr", TEXT), ("port", INT4), ("local_addr", TEXT), ("local_port", INT4),
             ("connect_time", TEXT), ("request_time", TEXT), ("wait", INT4), ("wait_us", INT4),
             ("close_needed", INT4), ("ptr", TEXT), ("link", TEXT), ("remote_pid", INT4), ("tls", TEXT),
             ("application_name", TEXT), ("prepared_statements", INT4), ("id", INT8), ("tenant", TEXT),
             ("pinned", TEXT)]

EXPECTED = {
    "VERSION": [("version", TEXT)],
    "CONFIG": [("key", TEXT), ("value", TEXT), ("default", TEXT), ("changeable", TEXT)],
    "DATABASES": [("name", TEXT), ("host", TEXT), ("port", INT4), ("database", TEXT), ("force_user", TEXT),
                  ("pool_size", INT4), ("min_pool_size", INT4), ("reserve_pool_size", INT4),
                  ("server_lifetime", INT4), ("pool_mode", TEXT), ("load_balance_hosts", INT4),
                  ("max_connections", INT4), ("current_connections", INT4), ("max_client_connections", INT4),
                  ("current_client_connections", INT4), ("paused", INT4), ("disabled", INT4)],
    "POOLS": [("database", TEXT), ("user", TEXT)]
    + [(n, INT4) for n in ["cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
                           "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used",
                           "sv_tested", "sv_login", "maxwait", "maxwait_us"]]
    + [("pool_mode", TEXT), ("load_balance_hosts", INT4), ("tenant", TEXT)],
    "STATS": STATS_COLS,
    "STATS_TOTALS": [("database", TEXT)] + [(n, NUMERIC) for n in [
        "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time",
        "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count"]],
    "STATS_AVERAGES": [("database", TEXT)] + [(n, NUMERIC) for n in [
        "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time",
        "query_time", "wait_time", "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"]],
    "TOTALS": [("name", TEXT), ("value", NUMERIC)],
    "CLIENTS": CONN_COLS,
    "SERVERS": CONN_COLS,
    "USERS": [("name", TEXT), ("pool_size", INT4), ("reserve_pool_size", INT4), ("pool_mode", TEXT),
              ("max_user_connections", INT4), ("current_connections", INT4),
              ("max_user_client_connections", INT4), ("current_client_connections", INT4)],
    "LISTS": [("list", TEXT), ("items", INT4)],
    "MEM": [("name", TEXT), ("size", INT4), ("used", INT4), ("free", INT4), ("memtotal", INT4)],
    "STATE": [("key", TEXT), ("value", TEXT)],
    "TENANTS": [("id", TEXT), ("database", TEXT), ("pool_size", INT4), ("max_client_conn", INT4),
                ("cl_active", INT4), ("cl_waiting", INT4), ("sv_active", INT4), ("sv_idle", INT4),
                ("total_xact_count", INT8), ("total_query_count", INT8), ("total_wait_time", INT8),
                ("avg_wait_time", INT8), ("disabled", INT4), ("xact_rate", INT4), ("xact_tokens", INT8),
                ("cl_throttled", INT4), ("total_throttled_count", INT8), ("total_throttle_time", INT8)],
    "TENANT_STATS": STATS_COLS[:1] + [("tenant", TEXT)] + STATS_COLS[1:],
}


@pytest.fixture
def sb(bouncer_factory):
    return bouncer_factory(settings={"stats_period": "1"},
                           tenants={"acme": "pool_size=2", "globex": "pool_size=2"})


def admin_wire(b, user="admin"):
    s, _ = pgwire.login(b, user=user, dbname="pgtenant")
    return s


def show(s, what):
    return pgwire.result(pgwire.query(s, what))


def rows_as_dicts(s, what):
    cols, rows = show(s, what)
    return [dict(zip([c[0] for c in cols], r)) for r in rows]


def workload(b):
    acme = b.connect(options="-c tenant=acme")
    globex = b.connect(options="-c tenant=globex")
    for _ in range(100):
        acme.execute("select 1")
    for i in range(20):  # extended protocol: Parse, Bind, Describe, Execute, Sync
        assert acme.execute("select %s::int", [i]).fetchone()[0] == i
    for _ in range(10):
        globex.execute("select 1")
    # one query that spans several ticks of libevent's cached clock (4 ms
    # on this kernel): otherwise 130 quick ones can all measure 0 us
    acme.execute("select pg_sleep(0.02)")
    return acme, globex


def test_every_show_has_pgbouncer_columns_in_order_with_types(sb):
    acme, globex = workload(sb)
    s = admin_wire(sb)
    for what, expected in EXPECTED.items():
        cols, rows = show(s, "SHOW " + what)
        assert cols == expected, what
        # lower case and a trailing semicolon are the same command
        assert show(s, "show %s;" % what.lower())[0] == expected, what
    lists = dict(show(s, "SHOW LISTS")[1])
    assert list(lists) == ["databases", "users", "pools", "free_clients", "used_clients", "login_clients",
                           "free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries",
                           "dns_pending"]
    assert int(lists["databases"]) == len(sb.databases) and int(lists["used_clients"]) >= 3
    assert [r[0] for r in show(s, "SHOW STATE")[1]] == ["active", "paused", "suspended"]
    s.close()
    acme.close()
    globex.close()


def test_stats_after_known_workload(sb):
    acme, globex = workload(sb)
    s = admin_wire(sb)
    stats = {r["database"]: r for r in rows_as_dicts(s, "SHOW STATS")}
    app = {k: int(v) for k, v in stats["appdb"].items() if k != "database"}
    assert app["total_xact_count"] >= 130 and app["total_query_count"] >= 130
    assert app["total_server_assignment_count"] >= 130  # transaction mode: one per transaction
    assert app["total_client_parse_count"] == 20 and app["total_server_parse_count"] == 20
    assert app["total_bind_count"] == 20
    assert app["total_received"] > 130 * 14 and app["total_sent"] > 130 * 11  # 'Q' + "select 1"; 'Z'
    assert app["total_xact_time"] > 0 and app["total_query_time"] > 0
    assert app["total_query_time"] <= app["total_xact_time"] + 1000

    # per tenant: each tenant's own figures, none of the other's
    ts = {r["tenant"]: r for r in rows_as_dicts(s, "SHOW TENANT_STATS") if r["database"] == "appdb"}
    assert set(ts) == {"acme", "globex"}
    a, g = ts["acme"], ts["globex"]
    assert int(a["total_xact_count"]) >= 120 and int(a["total_bind_count"]) == 20
    assert 10 <= int(g["total_xact_count"]) < 20 and int(g["total_bind_count"]) == 0
    assert int(a["total_xact_count"]) + int(g["total_xact_count"]) == app["total_xact_count"]

    # the same counters through the other views
    totals = {r["database"]: r for r in rows_as_dicts(s, "SHOW STATS_TOTALS")}["appdb"]
    assert int(totals["xact_count"]) == app["total_xact_count"]
    assert int(totals["bytes_received"]) == app["total_received"]
    assert int(totals["bind_count"]) == 20
    tot = {r["name"]: int(r["value"]) for r in rows_as_dicts(s, "SHOW TOTALS")}
    assert tot["total_xact_count"] == sum(int(r["total_xact_count"]) for r in stats.values())
    assert tot["total_ps_bind_count"] == 20 and "avg_xact_count" in tot
    tenants = {r["id"]: r for r in rows_as_dicts(s, "SHOW TENANTS")}
    assert tenants["acme"]["total_xact_count"] == a["total_xact_count"]

    # connection views
    pools = {r["tenant"]: r for r in rows_as_dicts(s, "SHOW POOLS") if r["database"] == "appdb"}
    assert pools["acme"]["user"] == "app.acme" and pools["globex"]["user"] == "app.globex"
    keys = [(r["database"], r["user"]) for r in rows_as_dicts(s, "SHOW POOLS")]
    assert len(keys) == len(set(keys))  # (database, user) is unique, as tools expect
    db = {r["name"]: r for r in rows_as_dicts(s, "SHOW DATABASES")}["appdb"]
    assert int(db["current_client_connections"]) == 2
    assert int(db["current_connections"]) == sum(
        int(p["sv_active"]) + int(p["sv_idle"]) + int(p["sv_used"]) + int(p["sv_login"]) for p in pools.values())
    assert db["server_lifetime"] == "3600" and db["paused"] == "0"
    clients = [r for r in rows_as_dicts(s, "SHOW CLIENTS") if r["database"] == "appdb"]
    assert sorted(c["tenant"] for c in clients) == ["acme", "globex"]
    assert all(c["replication"] == "none" for c in clients)
    ids = [int(r["id"]) for r in rows_as_dicts(s, "SHOW CLIENTS") + rows_as_dicts(s, "SHOW SERVERS")]
    assert len(ids) == len(set(ids))
    users = {r["name"]: r for r in rows_as_dicts(s, "SHOW USERS")}
    assert int(users["app"]["current_client_connections"]) == 2
    s.close()
    acme.close()
    globex.close()


def test_averages_cover_the_last_stats_period(sb):
    acme = sb.connect(options="-c tenant=acme")
    s = admin_wire(sb)
    deadline = time.time() + 2.5
    n = 0
    while time.time() < deadline and n < 20000:
        acme.execute("select 1")
        n += 1
    avg = {r["database"]: r for r in rows_as_dicts(s, "SHOW STATS_AVERAGES")}["appdb"]
    # a full period of steady traffic: a rate near n / 2.5 per second
    assert int(avg["xact_count"]) > 0 and int(avg["query_count"]) > 0
    assert n / 2.5 / 4 < int(avg["xact_count"]) < n / 2.5 * 4, (n, avg)
    assert int(avg["bytes_received"]) > 0 and int(avg["xact_time"]) > 0
    stats = {r["database"]: r for r in rows_as_dicts(s, "SHOW STATS")}["appdb"]
    assert stats["avg_xact_count"] == avg["xact_count"]
    ts = {r["tenant"]: r for r in rows_as_dicts(s, "SHOW TENANT_STATS")}
    assert int(ts["acme"]["avg_xact_count"]) > 0
    time.sleep(2.5)  # two idle periods
    avg = {r["database"]: r for r in rows_as_dicts(s, "SHOW STATS_AVERAGES")}["appdb"]
    assert int(avg["xact_count"]) == 0 and int(avg["bytes_received"]) == 0
    assert sb.log_contains(r"stats: \d+ xacts/s") >= 2  # log_stats, once per period
    s.close()
    acme.close()


def test_pgbouncer_exporter_queries(sb):
    acme, globex = workload(sb)
    # what Go's lib/pq sends at startup; the exporter logs in as a stats user
    s, _ = pgwire.login(sb, user="monitor", dbname="pgbouncer",
                        extra={"extra_float_digits": "2", "client_encoding": "UTF8", "datestyle": "ISO, MDY"})

    def numeric(v):
        float(v)  # the exporter parses these with strconv.ParseFloat
        return True

    cols, rows = show(s, "SHOW STATS")
    names = [c[0] for c in cols]
    for col in ["total_query_count", "total_query_time", "total_received", "total_sent", "total_wait_time",
                "total_xact_count", "total_xact_time", "total_server_assignment_count",
                "total_client_parse_count", "total_server_parse_count", "total_bind_count",
                "avg_query_count", "avg_query_time", "avg_recv", "avg_sent", "avg_wait_time",
                "avg_xact_count", "avg_xact_time", "avg_server_assignment_count"]:
        i = names.index(col)
        assert all(numeric(r[i]) for r in rows)
    assert "appdb" in [r[names.index("database")] for r in rows]

    cols, rows = show(s, "SHOW VERSION;")
    assert [c[0] for c in cols] == ["version"] and len(rows) == 1 and rows[0][0]

    cols, rows = show(s, "SHOW LISTS;")
    assert all(numeric(r[1]) for r in rows) and "used_clients" in [r[0] for r in rows]

    cols, rows = show(s, "SHOW CONFIG;")
    config = {r[0]: r[1] for r in rows}
    for key in ["max_client_conn", "default_pool_size", "min_pool_size", "reserve_pool_size",
                "server_lifetime", "server_idle_timeout", "query_timeout", "query_wait_timeout",
                "client_idle_timeout", "idle_transaction_timeout", "max_db_connections"]:
        assert numeric(config[key]), key

    cols, rows = show(s, "SHOW CLIENTS;")
    names = [c[0] for c in cols]
    for col in ["database", "user", "state", "application_name"]:
        assert col in names
    assert len(rows) >= 3

    cols, rows = show(s, "SHOW databases;")
    names = [c[0] for c in cols]
    for r in rows:
        for col in ["pool_size", "min_pool_size", "reserve_pool_size", "max_connections",
                    "current_connections", "paused", "disabled"]:
            assert numeric(r[names.index(col)]), col

    cols, rows = show(s, "SHOW stats_totals;")
    names = [c[0] for c in cols]
    assert all(numeric(v) for r in rows for v in r[1:])

    cols, rows = show(s, "SHOW pools;")
    names = [c[0] for c in cols]
    for col in ["cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
                "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                "maxwait", "maxwait_us"]:
        assert all(numeric(r[names.index(col)]) for r in rows), col
    labels = [(r[names.index("database")], r[names.index("user")]) for r in rows]
    assert len(labels) == len(set(labels))  # duplicate series would fail the exporter's scrape

    # a stats user reads but does not control
    out = pgwire.query(s, "PAUSE")
    err = [pgwire.error_fields(b) for t, b in out if t == b"E"]
    assert err and err[0]["C"] == "42501"
    assert [r[0] for r in show(s, "SHOW STATE")[1]] == ["active", "paused", "suspended"]
    s.close()
    acme.close()
    globex.close()


def test_stats_period_is_validated_and_reloadable(sb):
    s = admin_wire(sb)
    assert {r["key"]: r["value"] for r in rows_as_dicts(s, "SHOW CONFIG")}["stats_period"] == "1"
    out = pgwire.query(s, "SET stats_period = 0")
    assert [t for t, _ in out if t == b"E"]
    pgwire.query(s, "SET stats_period = 2")
    assert {r["key"]: r["value"] for r in rows_as_dicts(s, "SHOW CONFIG")}["stats_period"] == "2"
    s.close()
    with pytest.raises(psycopg.Error):
        sb.admin("SHOW STATS", user="app")  # a normal user cannot reach the console
