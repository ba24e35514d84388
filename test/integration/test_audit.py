"""The audit log (SPEC §10, `audit_log`): one JSON object per line for each
login, refusal, disconnect, admin control command and reload, with the keys
in the SPEC's order and only those that apply; never a password, token or
query text.  Lines reach the file within a second; a logrotate rename +
SIGHUP loses none; a file that cannot be opened or written is logged once,
counted in /metrics, retried, and never stops logins.

Logins by password go over plaintext TCP with the tenant in the user name;
logins by JWT go over TLS to a database entry with auth_type=jwt, the
tenant in the token's claim.
"""
import json
import os
import re
import shutil
import signal
import threading
import time
import types

import psycopg
import pytest

from conftest import ADMIN_PASSWORD, APP_PASSWORD, free_port, login_error
from jwtkeys import KeySet, claims, sign
from test_metrics import parse, scrape, value
from tlscerts import CertMaker

ISS = "https://issuer.example.com/audit"
AUD = "audit-aud"
KEYS = ["ts", "event", "conn", "tenant", "tenant_source", "user", "database", "addr", "tls", "auth",
        "jwt_iss", "jwt_sub", "reason", "sqlstate", "duration_ms", "xacts", "bytes_in", "bytes_out", "command"]
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ADDR = re.compile(r"^127\.0\.0\.1:\d+$")
BAD_PASSWORD = "not-the-password-7f3a"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeySet(tmp_path_factory.mktemp("auditkeys"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    m = CertMaker(tmp_path_factory.mktemp("audittls"))
    ca = m.ca("ca", "pgtenant audit test CA")
    return m.issue("pgtenant", "pgtenant", ca, ("DNS:localhost", "IP:127.0.0.1"))


def audit_bouncer(factory, pg, keys, certs, audit_log, settings=None):
    s = {"audit_log": audit_log, "unknown_tenant": "reject", "auth_failure_delay": "0",
         "jwt_key_file": keys.jwks, "jwt_algorithms": "RS256", "jwt_issuer": ISS, "jwt_audience": AUD,
         "client_tls_sslmode": "prefer", "client_tls_cert_file": certs.cert, "client_tls_key_file": certs.key}
    s.update(settings or {})
    b = factory(settings=s,
                databases={"jwtdb": "host=127.0.0.1 port=%d dbname=appdb user=app password=%s auth_type=jwt"
                                    % (pg.port, APP_PASSWORD)},
                tenants={"acme": "pool_size=2", "globex": "pool_size=2", "blocked": "disabled=yes"})
    b.audit = audit_log
    return b


def read_events(path):
    """Every line of the file, each parsed as one JSON object."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), "last line cut: %r" % data[-200:]
    out = []
    for line in data.decode("utf-8").splitlines():
        ev = json.loads(line)
        assert isinstance(ev, dict), line
        out.append(ev)
    return out


def wait_events(path, n, timeout=5.0):
    """Wait until path has at least n lines; returns them and how long it took."""
    start = time.time()
    while True:
        evs = read_events(path)
        if len(evs) >= n or time.time() - start > timeout:
            return evs, time.time() - start
        time.sleep(0.02)


def check_shape(ev):
    """Keys in the SPEC's order, values of the right types."""
    keys = list(ev)
    assert keys == [k for k in KEYS if k in ev], "keys out of order: %s" % keys
    assert TS.match(ev["ts"]), ev
    assert ev["event"] in ("login", "refusal", "disconnect", "admin", "reload")
    if "conn" in ev:
        assert re.fullmatch(r"C-\d+", ev["conn"]), ev
    if "addr" in ev:
        assert ADDR.match(ev["addr"]), ev
    if "tls" in ev:
        assert isinstance(ev["tls"], bool)
    for k in ("duration_ms", "xacts", "bytes_in", "bytes_out"):
        if k in ev:
            assert isinstance(ev[k], int) and not isinstance(ev[k], bool) and ev[k] >= 0, ev
    for k in ("tenant", "tenant_source", "user", "database", "auth", "jwt_iss", "jwt_sub", "reason", "sqlstate",
              "command"):
        if k in ev:
            assert isinstance(ev[k], str) and ev[k], ev


def good_token(keys, tenant="globex", **kw):
    return sign(keys, claims(tenant=tenant, sub="app", iss=ISS, aud=AUD, **kw), "RS256")


def test_scripted_session(bouncer_factory, pg, keys, certs, tmp_path):
    path = str(tmp_path / "audit.log")
    b = audit_bouncer(bouncer_factory, pg, keys, certs, path)
    n = 0

    def step(count):
        nonlocal n
        n += count
        evs, took = wait_events(path, n)
        assert len(evs) == n, evs
        assert took < 1.0, "lines took %.2f s to reach the file" % took
        return evs

    # 1. a good login by password (plaintext, tenant in the user name), three transactions
    conn = b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable")
    step(1)
    conn.execute("select 1")
    conn.execute("select 'some query text that must never be audited'")
    conn.execute("begin")
    conn.execute("select 3")
    conn.execute("commit")
    conn.close()
    step(1)
    # 2. a good login by JWT over TLS, the tenant from the token
    tok = good_token(keys)
    conn = b.connect(user="app", dbname="jwtdb", password=tok, sslmode="require")
    step(1)
    conn.execute("select 1")
    conn.close()
    step(1)
    # 3. a bad password, 4. an unknown tenant, 5. a disabled tenant, 6. an expired token
    assert login_error(b, user="app.acme", password=BAD_PASSWORD)[0] == "28P01"
    step(1)
    assert login_error(b, user="app.nosuch", password=APP_PASSWORD)[0] == "08004"
    step(1)
    assert login_error(b, user="app.blocked", password=APP_PASSWORD)[0] == "08004"
    step(1)
    expired = sign(keys, claims(tenant="globex", sub="app", iss=ISS, aud=AUD, lifetime=-3600), "RS256")
    with pytest.raises(psycopg.OperationalError, match="invalid token: expired"):
        b.connect(user="app", dbname="jwtdb", password=expired, sslmode="require")
    step(1)
    # 7. the admin console: PAUSE, RESUME, RELOAD, then its disconnect
    with psycopg.connect(b.dsn("admin", "pgtenant", sslmode="disable"), autocommit=True) as adm:
        step(1)
        adm.execute("PAUSE", prepare=False)
        step(1)
        adm.execute("RESUME", prepare=False)
        step(1)
        adm.execute("RELOAD", prepare=False)
        step(2)  # the command, then the reload
    evs = step(1)

    for ev in evs:
        check_shape(ev)
    got = [(e["event"], e.get("command") or e.get("sqlstate") or e.get("tenant") or e.get("database"))
           for e in evs]
    assert got == [
        ("login", "acme"), ("disconnect", "acme"),
        ("login", "globex"), ("disconnect", "globex"),
        ("refusal", "28P01"), ("refusal", "08004"), ("refusal", "08004"), ("refusal", "28P01"),
        ("login", "pgtenant"), ("admin", "PAUSE"), ("admin", "RESUME"), ("admin", "RELOAD"),
        ("reload", "RELOAD"), ("disconnect", "pgtenant"),
    ], got
    (pw_in, pw_out, jwt_in, jwt_out, bad_pw, unknown, disabled, bad_tok,
     adm_in, pause, resume, reload_cmd, reload, adm_out) = evs
    base = {k: pw_in[k] for k in ("conn", "addr")}
    assert pw_in == dict(ts=pw_in["ts"], event="login", **base, tenant="acme", tenant_source="user", user="app",
                         database="appdb", tls=False, auth="scram-sha-256")
    assert set(pw_out) == {"ts", "event", "conn", "tenant", "tenant_source", "user", "database", "addr", "tls",
                           "auth", "duration_ms", "xacts", "bytes_in", "bytes_out"}
    assert pw_out["conn"] == pw_in["conn"] and pw_out["xacts"] == 3, pw_out
    assert pw_out["bytes_in"] > 100 and pw_out["bytes_out"] > 100, pw_out
    assert jwt_in == dict(ts=jwt_in["ts"], event="login", conn=jwt_in["conn"], tenant="globex", tenant_source="jwt",
                          user="app", database="jwtdb", addr=jwt_in["addr"], tls=True, auth="jwt", jwt_iss=ISS,
                          jwt_sub="app")
    assert jwt_out["conn"] == jwt_in["conn"] and jwt_out["xacts"] == 1 and jwt_out["tls"] is True
    assert jwt_out["jwt_iss"] == ISS and jwt_out["jwt_sub"] == "app"
    assert jwt_in["conn"] != pw_in["conn"]
    assert bad_pw["tenant"] == "acme" and bad_pw["user"] == "app" and bad_pw["auth"] == "scram-sha-256"
    assert bad_pw["reason"].startswith("password authentication failed"), bad_pw
    assert unknown["tenant"] == "nosuch" and unknown["reason"].startswith("unknown tenant"), unknown
    assert disabled["tenant"] == "blocked" and disabled["reason"].startswith("tenant disabled"), disabled
    assert bad_tok["reason"] == "invalid token: expired" and bad_tok["auth"] == "jwt" and bad_tok["tls"] is True
    for r in (bad_pw, unknown, disabled, bad_tok):
        assert "duration_ms" not in r and "command" not in r and "xacts" not in r
    assert adm_in["user"] == "admin" and adm_in["database"] == "pgtenant" and adm_in["auth"] == "scram-sha-256"
    for a in (pause, resume, reload_cmd):
        assert set(a) == {"ts", "event", "conn", "user", "addr", "command"} and a["user"] == "admin"
        assert a["conn"] == adm_in["conn"]
    assert reload == dict(ts=reload["ts"], event="reload", conn=adm_in["conn"], user="admin", addr=adm_in["addr"],
                          command="RELOAD")
    assert adm_out["conn"] == adm_in["conn"] and adm_out["xacts"] == 0

    # never a password, a token (or any part of one) or query text
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for secret in [APP_PASSWORD, BAD_PASSWORD, ADMIN_PASSWORD, tok, expired, "some query text", "select"] + \
            tok.split(".") + expired.split(".")[1:]:
        assert secret not in text, secret


def test_sighup_reload_and_failed_reload(bouncer_factory, pg, keys, certs, tmp_path):
    path = str(tmp_path / "audit.log")
    b = audit_bouncer(bouncer_factory, pg, keys, certs, path)
    b.reload()
    evs, _ = wait_events(path, 1)
    assert [(e["event"], e["command"]) for e in evs] == [("reload", "SIGHUP")] and "reason" not in evs[0]
    assert set(evs[0]) == {"ts", "event", "command"}
    with open(b.ini, "a") as f:
        f.write("no_such_key = 1\n")
    b.proc.send_signal(signal.SIGHUP)
    evs, _ = wait_events(path, 2)
    assert evs[1]["event"] == "reload" and evs[1]["command"] == "SIGHUP"
    assert evs[1]["reason"].startswith("reload failed"), evs[1]
    # a failed RELOAD from the console is audited as such, and the console says so
    with psycopg.connect(b.dsn("admin", "pgtenant"), autocommit=True) as adm:
        with pytest.raises(psycopg.Error, match="reload failed"):
            adm.execute("RELOAD", prepare=False)
    evs, _ = wait_events(path, 6)
    assert [e["event"] for e in evs[2:]] == ["login", "admin", "reload", "disconnect"]
    assert evs[4]["reason"].startswith("reload failed") and evs[4]["user"] == "admin"


def test_logrotate_rename_and_sighup_loses_no_line(bouncer_factory, pg, keys, certs, tmp_path):
    path = str(tmp_path / "audit.log")
    b = audit_bouncer(bouncer_factory, pg, keys, certs, path)
    stop = threading.Event()
    made = []
    errors = []

    def churn():
        while not stop.is_set():
            try:
                with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable") as c:
                    c.execute("select 1")
                made.append(1)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    os.rename(path, path + ".1")  # what logrotate does, then it signals
    b.proc.send_signal(signal.SIGHUP)
    time.sleep(0.7)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    time.sleep(0.6)  # the last lines reach the file
    old, new = read_events(path + ".1"), read_events(path)
    assert old and new
    reloads = [e for e in old + new if e["event"] == "reload"]
    assert len(reloads) == 1 and reloads[0] in new, "the reload's line is the new file's"
    conns = [e for e in old + new if e["event"] != "reload"]
    logins = [e["conn"] for e in conns if e["event"] == "login"]
    ends = [e["conn"] for e in conns if e["event"] == "disconnect"]
    assert len(logins) == len(made) and sorted(logins) == sorted(ends), (len(logins), len(ends), len(made))
    assert len(set(logins)) == len(logins)
    for e in old + new:
        check_shape(e)


def metrics_settings():
    port = free_port()
    return port, {"metrics_listen": "127.0.0.1:%d" % port}


def test_unwritable_audit_log_never_stops_logins(bouncer_factory, pg, keys, certs, tmp_path):
    missing = tmp_path / "not-yet"
    path = str(missing / "audit.log")
    port, s = metrics_settings()
    b = audit_bouncer(bouncer_factory, pg, keys, certs, path, settings=s)
    b.metrics_port = port
    for _ in range(3):
        with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable") as c:
            assert c.execute("select 1").fetchone()[0] == 1
    time.sleep(1.5)  # retried at least once
    with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable") as c:
        assert c.execute("select 1").fetchone()[0] == 1
    m = parse(scrape(b))
    assert value(m, "pgtenant_audit_errors_total") >= 2
    assert value(m, "pgtenant_audit_lines_total") == 0
    assert value(m, "pgtenant_audit_dropped_total") == 0
    assert b.log_contains(r"audit log .*audit\.log: cannot open: No such file or directory") == 1, b.log()
    # it works again: the lines kept in memory are written, in order, none lost
    missing.mkdir()
    evs, _ = wait_events(path, 8, timeout=3)
    assert [e["event"] for e in evs] == ["login", "disconnect"] * 4
    assert b.log_contains("written again") == 1
    assert value(parse(scrape(b)), "pgtenant_audit_lines_total") == 8


def test_full_disk_is_counted_and_logged_once(bouncer_factory, pg, keys, certs):
    port, s = metrics_settings()
    b = audit_bouncer(bouncer_factory, pg, keys, certs, "/dev/full", settings=s)
    b.metrics_port = port
    for _ in range(3):
        with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable") as c:
            assert c.execute("select 1").fetchone()[0] == 1
        time.sleep(0.4)
    time.sleep(1.2)
    m = parse(scrape(b))
    assert value(m, "pgtenant_audit_errors_total") >= 2
    assert value(m, "pgtenant_audit_lines_total") == 0
    assert b.log_contains("audit log /dev/full: cannot write: No space left on device") == 1, b.log()


def test_turned_on_and_off_by_reload_and_set(bouncer_factory, pg, keys, certs, tmp_path):
    path = str(tmp_path / "audit.log")
    b = audit_bouncer(bouncer_factory, pg, keys, certs, "")
    kept = b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable")  # logged in before the audit log was on
    with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable"):
        pass
    b.reload(audit_log=path)
    kept.execute("select 1")
    kept.close()
    evs, _ = wait_events(path, 2)
    assert [e["event"] for e in evs] == ["reload", "disconnect"] and evs[1]["xacts"] == 1
    # SET from the console: the key and value, but never the value of a key that may hold a secret
    with psycopg.connect(b.dsn("admin", "pgtenant"), autocommit=True) as adm:
        adm.execute("SET query_wait_timeout = 30", prepare=False)
        adm.execute("SET auth_query = 'SELECT usename, passwd FROM pg_shadow WHERE usename = $1'", prepare=False)
        adm.execute("SET audit_log = ''", prepare=False)
    time.sleep(0.5)
    evs = read_events(path)
    cmds = [e.get("command") for e in evs if e["event"] == "admin"]
    assert cmds == ["SET query_wait_timeout = 30", "SET auth_query = (hidden)", "SET audit_log = ''"], cmds
    n = len(evs)
    with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable"):
        pass
    time.sleep(0.5)
    assert len(read_events(path)) == n  # off


def test_stats_user_control_command_is_audited_as_refused(bouncer_factory, pg, keys, certs, tmp_path):
    path = str(tmp_path / "audit.log")
    b = audit_bouncer(bouncer_factory, pg, keys, certs, path)
    with psycopg.connect(b.dsn("monitor", "pgtenant"), autocommit=True) as mon:
        mon.execute("SHOW POOLS", prepare=False)  # not a control command: not audited
        with pytest.raises(psycopg.Error):
            mon.execute("SHUTDOWN", prepare=False)
    evs, _ = wait_events(path, 3)
    assert [e["event"] for e in evs] == ["login", "admin", "disconnect"]
    assert evs[1]["command"] == "SHUTDOWN" and evs[1]["sqlstate"] == "42501" and evs[1]["user"] == "monitor"
    assert b.proc.poll() is None


def test_shutdown_writes_pending_lines_and_open_sessions(bouncer_factory, pg, keys, certs, tmp_path):
    path = str(tmp_path / "audit.log")
    b = audit_bouncer(bouncer_factory, pg, keys, certs, path)
    conn = b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable")
    conn.execute("select 1")
    b.proc.send_signal(signal.SIGTERM)
    b.proc.wait(10)
    evs = read_events(path)
    assert [e["event"] for e in evs] == ["login", "disconnect"]
    assert evs[1]["reason"] == "pgtenant shut down" and evs[1]["xacts"] == 1
    conn.close()
    b.proc.stdout.close()
    b.proc = None


def test_syslog_target_keeps_logins_working(bouncer_factory, pg, keys, certs):
    port, s = metrics_settings()
    b = audit_bouncer(bouncer_factory, pg, keys, certs, "syslog", settings=s)
    b.metrics_port = port
    with b.connect(user="app.acme", password=APP_PASSWORD, sslmode="disable") as c:
        assert c.execute("select 1").fetchone()[0] == 1
    time.sleep(0.6)
    m = parse(scrape(b))
    assert value(m, "pgtenant_audit_lines_total") == 2
    assert value(m, "pgtenant_audit_errors_total") == 0
