"""The Prometheus endpoint: strict text-format parse, per-tenant series after
traffic, refusal counters, gauges that agree with the admin console."""
import re
import urllib.error
import urllib.request

import pytest

from conftest import free_port, login_error

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(r"^(%s)(\{(%s(?:,%s)*)\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$" % (NAME, LABEL, LABEL))


def parse(text):
    """Strict parser for exposition format 0.0.4; returns {(name, labels): value}."""
    assert text.endswith("\n")
    types, helps, samples = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name) and name not in helps
            helps[name] = True
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "summary", "histogram", "untyped") and name not in types
            types[name] = typ
            continue
        assert not line.startswith("#") and line, "unexpected line %r" % line
        m = SAMPLE.match(line)
        assert m, "bad sample line %r" % line
        name = m.group(1)
        family = re.sub(r"_(sum|count|bucket)$", "", name) if name not in types else name
        assert family in types, "sample %s before its TYPE" % name
        labels = tuple(re.findall(LABEL, m.group(3) or ""))
        assert (name, labels) not in samples, "duplicate series %s %s" % (name, labels)
        samples[(name, labels)] = float(m.group(len(m.groups())))
    return samples


def scrape(b):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % b.metrics_port, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def value(samples, name, **labels):
    for (n, ls), v in samples.items():
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items()):
            return v
    raise KeyError((name, labels))


@pytest.fixture
def mb(bouncer_factory):
    port = free_port()
    b = bouncer_factory(settings={"metrics_listen": "127.0.0.1:%d" % port, "tenant_setting": "app.tenant_id",
                                  "unknown_tenant": "reject"},
                        tenants={"acme": "pool_size=2", "globex": "pool_size=2"})
    b.metrics_port = port
    return b


def test_metrics_after_traffic(mb):
    with mb.connect(options="-c tenant=acme") as conn:
        for _ in range(100):
            conn.execute("select 1")
        for i in range(5):
            conn.execute("select %s::int", [i])  # Parse/Bind
        # longer than a tick of libevent's cached (coarse, 4 ms) clock, so
        # that the query time cannot sum to zero however fast the rest was
        conn.execute("select pg_sleep(0.02)")
        with mb.connect(options="-c tenant=globex") as other:
            other.execute("select 1")
            text = scrape(mb)
    s = parse(text)
    assert value(s, "pgtenant_transactions_total", tenant="acme") >= 100
    assert value(s, "pgtenant_queries_total", tenant="acme") >= 100
    assert value(s, "pgtenant_transactions_total", tenant="globex") >= 1
    assert value(s, "pgtenant_server_assignments_total", tenant="acme") >= 105
    assert value(s, "pgtenant_parses_total", tenant="acme") == 5
    assert value(s, "pgtenant_binds_total", tenant="acme") == 5
    assert value(s, "pgtenant_parses_total", tenant="globex") == 0
    assert value(s, "pgtenant_query_seconds_total", tenant="acme") > 0
    assert value(s, "pgtenant_client_connections", tenant="acme", state="active") == 1
    assert value(s, "pgtenant_client_connections", tenant="globex", state="active") == 1
    assert value(s, "pgtenant_server_connections", tenant="acme", state="idle") >= 1
    assert value(s, "pgtenant_received_bytes_total", tenant="acme") > 0
    assert value(s, "pgtenant_sent_bytes_total", tenant="acme") > 0
    assert value(s, "pgtenant_database_server_connections", database="appdb") >= 2
    assert value(s, "process_resident_memory_bytes") > 1e6
    assert value(s, "process_open_fds") > 3
    assert "pgtenant_wait_seconds_count" in {n for n, _ in s}
    # the gauges agree with the admin console
    pools = {p["tenant"]: p for p in mb.admin("SHOW POOLS")}
    s = parse(scrape(mb))
    for t in ("acme", "globex"):
        assert value(s, "pgtenant_client_connections", tenant=t, state="active") == pools[t]["cl_active"]
        assert value(s, "pgtenant_server_connections", tenant=t, state="idle") == pools[t]["sv_idle"]


def test_refusals_by_reason(mb):
    before = parse(scrape(mb))
    assert login_error(mb, server_settings={"tenant": "nosuch"})[0] == "08004"
    assert login_error(mb, password="wrong", server_settings={"tenant": "acme"})[0] == "28P01"
    assert login_error(mb, server_settings={"tenant": "Bad;Id"})[0] == "08004"
    after = parse(scrape(mb))
    for reason in ("unknown_tenant", "auth_failed", "invalid_tenant"):
        assert value(after, "pgtenant_refusals_total", reason=reason) == \
            value(before, "pgtenant_refusals_total", reason=reason) + 1, reason
    assert value(after, "pgtenant_refusals_total", reason="wait_timeout") == 0


def test_only_get_metrics(mb):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % mb.metrics_port, timeout=5)
    assert e.value.code == 404
    with mb.connect(options="-c tenant=acme") as conn:  # traffic unaffected by scrapes
        for _ in range(20):
            parse(scrape(mb))
            assert conn.execute("select 1").fetchone()[0] == 1


def test_bad_metrics_listen_is_refused(bouncer_factory, tmp_path):
    import subprocess

    from conftest import PGTENANT_BIN
    ini = tmp_path / "p.ini"
    ini.write_text("[pgtenant]\nauth_type = trust\nlisten_port = %d\nunix_socket_dir =\nmetrics_listen = nonsense\n"
                   % free_port())
    r = subprocess.run([PGTENANT_BIN, str(ini)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "metrics_listen" in r.stderr


def test_grafana_dashboard_queries_exported_metrics(mb):
    """Every metric the dashboard in contrib/grafana queries is one /metrics exports."""
    import json
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "grafana", "pgtenant-dashboard.json")
    with open(path) as f:
        dash = json.load(f)
    with mb.connect(options="-c tenant=acme") as conn:
        conn.execute("select 1")
        exported = {n for n, _ in parse(scrape(mb))}
    exported |= {re.sub(r"_(sum|count)$", "", n) for n in exported}
    used = set()
    for p in dash["panels"]:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            used |= set(re.findall(r"\b(pgtenant_[a-z_]+|process_[a-z_]+)\b", t["expr"]))
    assert used and used <= exported, used - exported
    assert any("tenant" in p["title"] for p in dash["panels"])
