"""Admin control commands, each observed from a client: PAUSE/RESUME,
DISABLE/ENABLE, KILL TENANT, KILL, RECONNECT, WAIT_CLOSE, SET."""
import threading
import time

import psycopg
import pytest

from conftest import login_error


@pytest.fixture
def cb(bouncer_factory):
    return bouncer_factory(settings={"tenant_setting": "app.tenant_id", "default_pool_size": "2"},
                           tenants={"acme": "pool_size=2", "globex": "pool_size=2"})


def in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as e:  # noqa: BLE001
            out["error"] = e
        out["at"] = time.time()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_pause_waits_for_transactions_then_holds_new_ones(cb):
    a = cb.connect(autocommit=False)
    a.execute("select 1")  # a transaction is running
    t, out = in_thread(lambda: cb.admin("PAUSE"))
    time.sleep(0.6)
    assert "at" not in out  # PAUSE waits for the transaction
    a.commit()
    t.join(5)
    assert "at" in out and "error" not in out
    b = cb.connect()
    tb, outb = in_thread(lambda: b.execute("select 42").fetchone()[0])
    time.sleep(0.6)
    assert "at" not in outb  # new transactions are held while paused
    cb.admin("RESUME")
    tb.join(5)
    assert outb.get("value") == 42
    a.close()
    b.close()


def test_disable_enable_tenant(cb):
    kept = cb.connect(options="-c tenant=acme")
    cb.admin("DISABLE acme")
    code, msg = login_error(cb, server_settings={"tenant": "acme"})
    assert code == "08004" and msg.startswith("tenant disabled")
    assert kept.execute("select 1").fetchone()[0] == 1  # existing sessions keep going
    assert login_error(cb, server_settings={"tenant": "globex"}) == (None, None)
    cb.admin("ENABLE acme")
    assert login_error(cb, server_settings={"tenant": "acme"}) == (None, None)
    kept.close()


def test_kill_tenant(cb):
    acme = cb.connect(options="-c tenant=acme")
    globex = cb.connect(options="-c tenant=globex")
    acme.execute("select 1")
    cb.admin("KILL TENANT acme")
    with pytest.raises(psycopg.OperationalError):
        acme.execute("select 1")
    assert globex.execute("select 2").fetchone()[0] == 2
    assert all(s["tenant"] != "acme" for s in cb.admin("SHOW SERVERS"))
    acme.close()
    globex.close()


def test_kill_database(cb):
    c = cb.connect()
    c.execute("select 1")
    cb.admin("KILL appdb")
    with pytest.raises(psycopg.OperationalError):
        c.execute("select 1")
    c.close()
    with cb.connect() as again:  # the database is not paused or disabled afterwards
        assert again.execute("select 3").fetchone()[0] == 3
    with pytest.raises(psycopg.Error) as e:
        cb.admin("KILL nosuchdb")
    assert "no such database" in str(e.value)


def test_reconnect_and_wait_close(cb):
    c = cb.connect()
    pid1 = c.execute("select pg_backend_pid()").fetchone()[0]
    cb.admin("RECONNECT appdb")
    pid2 = c.execute("select pg_backend_pid()").fetchone()[0]
    assert pid2 != pid1  # the idle server was closed
    tx = cb.connect(autocommit=False)
    tx.execute("select 1")  # holds a server in a transaction
    cb.admin("RECONNECT")
    t, out = in_thread(lambda: cb.admin("WAIT_CLOSE"))
    time.sleep(0.6)
    assert "at" not in out  # waits for the server in use to be released and closed
    tx.commit()
    t.join(5)
    assert "at" in out and "error" not in out
    c.close()
    tx.close()


def test_set_reloadable_keys(cb):
    cb.admin("SET default_pool_size = 7")
    cfg = {r["key"]: r for r in cb.admin("SHOW CONFIG")}
    assert cfg["default_pool_size"]["value"] == "7"
    cb.admin("SET query_wait_timeout TO '3'")
    assert {r["key"]: r for r in cb.admin("SHOW CONFIG")}["query_wait_timeout"]["value"] == "3"
    with pytest.raises(psycopg.Error) as e:
        cb.admin("SET listen_port = 1")
    assert "restart" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        cb.admin("SET no_such_key = 1")
    assert "unknown" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        cb.admin("SET default_pool_size = lots")
    assert "invalid value" in str(e.value)


def test_stats_users_cannot_control(cb):
    for cmd in ("PAUSE", "RESUME", "DISABLE acme", "KILL TENANT acme", "RECONNECT", "SET default_pool_size = 3"):
        with pytest.raises(psycopg.Error) as e:
            cb.admin(cmd, user="monitor")
        assert e.value.sqlstate == "42501", cmd
    assert cb.admin("SHOW POOLS", user="monitor") is not None


def test_show_state_users_mem(cb):
    assert [r["key"] for r in cb.admin("SHOW STATE")] == ["active", "paused", "suspended"]
    assert {r["key"]: r["value"] for r in cb.admin("SHOW STATE")}["paused"] == "no"
    cb.admin("PAUSE")
    assert {r["key"]: r["value"] for r in cb.admin("SHOW STATE")}["paused"] == "yes"
    cb.admin("RESUME")
    with cb.connect() as conn:
        conn.execute("select 1")
        users = cb.admin("SHOW USERS")
        assert list(users[0].keys()) == ["name", "pool_size", "reserve_pool_size", "pool_mode",
                                         "max_user_connections", "current_connections",
                                         "max_user_client_connections", "current_client_connections"]
        assert {u["name"]: u for u in users}["app"]["current_connections"] >= 1
        mem = {m["name"]: m for m in cb.admin("SHOW MEM")}
        assert list(cb.admin("SHOW MEM")[0].keys()) == ["name", "size", "used", "free", "memtotal"]
        assert mem["client"]["used"] >= 1 and mem["iobuf"]["size"] == 8192


def test_reload_from_the_console(cb):
    kept = cb.connect(options="-c tenant=acme")
    assert login_error(cb, server_settings={"tenant": "initech"})[0] == "08004"  # not configured yet
    cb.settings.update({"default_pool_size": "4", "tenant_required": "yes"})
    cb.tenants["initech"] = "pool_size=1"
    cb.write_config()
    assert cb.admin("RELOAD") is None
    cfg = {r["key"]: r["value"] for r in cb.admin("SHOW CONFIG")}
    assert cfg["default_pool_size"] == "4" and cfg["tenant_required"] == "yes"
    assert login_error(cb, server_settings={"tenant": "initech"}) == (None, None)
    code, msg = login_error(cb)
    assert code == "08004" and msg.startswith("no tenant given")
    assert kept.execute("select 1").fetchone()[0] == 1  # the session survived the reload
    # a broken file: RELOAD reports it and the old config stays
    cb.settings["pool_mode"] = "bogus"
    cb.write_config()
    with pytest.raises(psycopg.Error) as e:
        cb.admin("RELOAD")
    assert e.value.sqlstate == "F0000"
    assert {r["key"]: r["value"] for r in cb.admin("SHOW CONFIG")}["pool_mode"] == "transaction"
    kept.close()


def test_shutdown_from_the_console(cb):
    conn = cb.connect(options="-c tenant=acme")
    conn.execute("select 1")
    cb.admin("SHUTDOWN")
    assert cb.proc.wait(10) == 0  # the process exits
    with pytest.raises(psycopg.OperationalError):
        cb.connect()
    with pytest.raises(psycopg.Error):
        conn.execute("select 1")  # its clients are disconnected
    log = cb.log()
    assert "SHUTDOWN requested from the admin console" in log
    assert "AddressSanitizer" not in log and "runtime error" not in log
    cb.proc.stdout.close()
    cb.proc = None  # already stopped
