"""Conformance with PostgreSQL where drivers' own test suites noticed a
difference (issue 9): SASLprep of plain-text passwords, startup parameters
with dotted or keyword names, client_encoding reported under PostgreSQL's
own name, and bytes that are not a startup packet closed without an answer.
Each test compares with what PostgreSQL itself does, directly, where it can."""
import random
import socket
import struct
import types

import psycopg
import pytest

import pgwire

# ROMAN NUMERAL NINE: SASLprep (NFKC) turns the password into "IX-IX"
SASL_PASSWORD = "IX-\u2168"


# ---- SASLprep ----

@pytest.fixture
def saslprep_role(pg):
    # password_encryption is scram-sha-256 (conftest): PostgreSQL SASLpreps
    # the password before it derives the stored secret; conftest's pg_hba.conf
    # asks this role for SCRAM
    pg.sql("DROP ROLE IF EXISTS saslprep")
    pg.sql("CREATE ROLE saslprep LOGIN PASSWORD '%s'" % SASL_PASSWORD)
    yield
    try:
        pg.sql("DROP ROLE saslprep")
    except psycopg.Error:
        pass  # a backend of a stopped pgtenant may still be going away


def direct(pg, password, user="saslprep"):
    return psycopg.connect(host="127.0.0.1", port=pg.port, dbname="appdb", user=user, password=password,
                           connect_timeout=10, autocommit=True)


def test_saslprep_premise_on_postgresql(pg, saslprep_role):
    # libpq SASLpreps the password, PostgreSQL SASLpreps the stored one:
    # both spellings log in, a wrong password does not
    for pw in (SASL_PASSWORD, "IX-IX"):
        with direct(pg, pw) as conn:
            assert conn.execute("select current_user").fetchone()[0] == "saslprep"
    with pytest.raises(psycopg.OperationalError):
        direct(pg, "IX-X").close()


def test_saslprep_client_login_to_pgtenant(pg, saslprep_role, bouncer_factory):
    # auth_file has the plain password; pgtenant's own server login is the
    # appdb entry's (user app, ASCII password)
    b = bouncer_factory(users={"saslprep": SASL_PASSWORD})
    for pw in (SASL_PASSWORD, "IX-IX"):  # as on PostgreSQL, both spellings
        with b.connect(user="saslprep", password=pw) as conn:
            for i in range(3):
                assert conn.execute("select %s::int + 1", (i,)).fetchone()[0] == i + 1
    with pytest.raises(psycopg.OperationalError) as e:
        b.connect(user="saslprep", password="IX-X").close()
    assert "password authentication failed" in str(e.value)


def test_saslprep_server_login_from_auth_file(pg, saslprep_role, bouncer_factory):
    # pgtenant logs in to PostgreSQL as saslprep with SCRAM, the password
    # taken from auth_file as written (not SASLprepped there)
    b = bouncer_factory(users={"saslprep": SASL_PASSWORD},
                        databases={"sasldb": "host=127.0.0.1 port=%d dbname=appdb user=saslprep" % pg.port})
    with b.connect(dbname="sasldb") as conn:
        assert conn.execute("select current_user").fetchone()[0] == "saslprep"
    # and a client of that role, through that entry: both sides at once
    with b.connect(user="saslprep", dbname="sasldb", password=SASL_PASSWORD) as conn:
        assert conn.execute("select current_user, 42").fetchone() == ("saslprep", 42)
    assert b.log_contains("password authentication failed") == 0


# ---- startup parameters with dotted and keyword names ----

def rows(s, sql):
    return pgwire.result(pgwire.query(s, sql))[1]


def test_dotted_and_keyword_startup_parameters(bouncer_factory):
    # USER and SOME are reserved words: SET user.x = ... is a syntax error,
    # SET "user"."x" = ... is not.  A pool of one, transaction mode: every
    # transaction of either client starts on a reset connection, so the
    # parameters are applied again each time.
    b = bouncer_factory(settings={"default_pool_size": "1", "auth_type": "trust"})
    params = {"user.x": "1", "some.var": "hello", "Mixed.Case": "it's \"quoted\"", "my.v$1": "dollar"}
    s, _ = pgwire.login(b, extra=params)
    other, _ = pgwire.login(b)
    for _ in range(4):
        assert rows(s, 'SHOW "user.x"') == [["1"]]
        assert rows(s, "select current_setting('some.var'), current_setting('mixed.case'), "
                       "current_setting('my.v$1')") == [["hello", "it's \"quoted\"", "dollar"]]
        # the other client of the same server connection sees none of them
        assert rows(other, "select current_setting('user.x', true), current_setting('some.var', true)") \
            in ([[None, None]], [["", ""]])
    # inside an explicit transaction as well
    assert rows(s, "begin; select current_setting('user.x'); commit") == [["1"]]
    s.close()
    other.close()
    assert b.log_contains("syntax error") == 0


def test_dotted_and_keyword_parameters_in_options(bouncer_factory):
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect(options="-c user.y=5 -c some.other=x") as conn, b.connect() as other:
        for _ in range(3):
            assert conn.execute("select current_setting('user.y'), current_setting('some.other')") \
                .fetchone() == ("5", "x")
            assert other.execute("select current_setting('user.y', true)").fetchone()[0] in (None, "")


def test_list_parameter_from_options_keeps_its_elements(pg, bouncer_factory):
    # search_path (not reported by PostgreSQL 15) is applied with SET on a
    # plain pool: SET search_path = 'Sch_A,public' would name one schema
    # "Sch_A,public".  PostgreSQL shows the text as given at login and
    # resolves it to the schemas sch_a and public; through pgtenant the text
    # is PostgreSQL's rendering of the same list.
    pg.sql("CREATE SCHEMA IF NOT EXISTS sch_a; GRANT USAGE ON SCHEMA sch_a TO PUBLIC", dbname="appdb")
    opts = "-c search_path=Sch_A,public"
    schemas = "select current_schemas(false)::text"
    with psycopg.connect(host=pg.sockdir, port=pg.port, dbname="appdb", user="app", options=opts) as conn:
        want = conn.execute(schemas).fetchone()[0]
    assert want == "{sch_a,public}"
    b = bouncer_factory(settings={"default_pool_size": "1"})
    with b.connect(options=opts) as conn, b.connect() as other:
        for _ in range(3):
            assert conn.execute(schemas).fetchone()[0] == want
            assert conn.execute("show search_path").fetchone()[0] == "sch_a, public"
            assert other.execute("show search_path").fetchone()[0] == '"$user", public'
    # a quoted element with a quote in it, and a blank escaped for options
    with psycopg.connect(host="127.0.0.1", port=b.port, dbname="appdb", user="app", password=b.users["app"],
                         options='-c search_path="Odd""Name",\\ public', autocommit=True) as conn:
        assert conn.execute("show search_path").fetchone()[0] == '"Odd""Name", public'


def test_invalid_parameter_names_are_still_refused(bouncer_factory):
    b = bouncer_factory(settings={"auth_type": "trust"})
    for name in ('a"b.c', "a..b", "x.", ".x", "1a.b", "a b.c", "a.b;c"):
        with pytest.raises(AssertionError) as e:
            pgwire.login(b, extra={name: "1"})
        assert "unsupported startup parameter" in str(e.value), name


# ---- client_encoding under PostgreSQL's own name ----

def param_status(seen, name):
    for t, body in seen:
        if t == b"S":
            k, v = body.split(b"\0")[:2]
            if k.decode() == name:
                return v.decode()
    return None


ENCODING_SPELLINGS = [
    "utf8", "UTF8", "utf-8", "UTF_8", "Unicode", "unicode", "UNICODE",
    "euc-jp", "EUC_JP", "eucjp", "euc_cn", "EUC-KR", "euc_tw", "euc_jis_2004",
    "latin1", "Latin-1", "ISO-8859-1", "iso_8859_1", "iso8859-15", "ISO_8859-2", "latin10",
    "iso-8859-5", "ISO_8859_6", "iso88597", "iso-8859-8", "iso8859_9", "iso885910",
    "iso885913", "iso885914", "iso885916", "latin9",
    "win1252", "Windows-1252", "WIN1250", "windows1251", "win", "win866", "alt", "win874",
    "windows-1253", "win1254", "win1255", "win1256", "win1257", "win1258", "abc", "tcvn", "tcvn5712", "vscii",
    "koi8", "KOI8-R", "koi8u", "sql_ascii", "SQL-ASCII",
    "sjis", "Shift_JIS", "mskanji", "win932", "shift_jis_2004", "big5", "win950", "gbk", "win936",
    "uhc", "win949", "johab", "gb18030", "mule_internal",
]


def test_client_encoding_reported_under_postgresql_name(pg, bouncer_factory):
    b = bouncer_factory(settings={"auth_type": "trust"})
    pgdirect = types.SimpleNamespace(port=pg.port, users={})
    # the first login gives the pool its server parameters
    pgwire.login(b)[0].close()
    for spelling in ENCODING_SPELLINGS:
        s, seen = pgwire.login(b, extra={"client_encoding": spelling})
        got = param_status(seen, "client_encoding")
        s.close()
        try:
            ds, dseen = pgwire.login(pgdirect, user="trustuser", extra={"client_encoding": spelling})
            want = param_status(dseen, "client_encoding")
            ds.close()
        except AssertionError:
            # client encodings without a conversion from UTF8 (MULE_INTERNAL)
            # are refused at login: PostgreSQL's name for it all the same
            want = pg.sql("select pg_encoding_to_char(pg_char_to_encoding('%s'))" % spelling)[0][0]
        assert want, spelling
        assert got == want, (spelling, got, want)
    # a name PostgreSQL does not know is passed on as written (the server refuses it)
    s, seen = pgwire.login(b, extra={"client_encoding": "utf-16"})
    assert param_status(seen, "client_encoding") == "utf-16"
    s.close()


def test_client_encoding_spellings_work_and_cost_no_set(pg, bouncer_factory):
    b = bouncer_factory(settings={"default_pool_size": "1", "auth_type": "trust"})
    # the one server connection is opened for a client without client_encoding
    first, _ = pgwire.login(b)
    assert rows(first, "select 1") == [["1"]]
    source = "select source from pg_settings where name = 'client_encoding'"
    s, seen = pgwire.login(b, extra={"client_encoding": "utf8"})
    assert param_status(seen, "client_encoding") == "UTF8"
    for _ in range(3):
        # "utf8" is the server's UTF8: no SET client_encoding in front of the
        # transaction (a SET would make the source "session")
        assert rows(s, source) != [["session"]]
        assert rows(s, "select 'é' || 'ß'") == [["éß"]]
        assert rows(first, "select 1") == [["1"]]
    s.close()
    # EUC_JP differs from the server's: it is SET, and conversion works
    s, seen = pgwire.login(b, extra={"client_encoding": "euc-jp"})
    assert param_status(seen, "client_encoding") == "EUC_JP"
    for _ in range(2):
        s.sendall(pgwire.msg(b"Q", "select '日本語', current_setting('client_encoding')".encode("euc_jp") + b"\0"))
        answer = pgwire.read_until_ready(s)
        assert not [m for t, m in answer if t == b"E"], answer
        (row,) = [body for t, body in answer if t == b"D"]
        (ln,) = struct.unpack("!i", row[2:6])
        assert row[6:6 + ln].decode("euc_jp") == "日本語"
        assert row[6 + ln + 4:] == b"EUC_JP"
        assert rows(first, "show client_encoding") == [["UTF8"]]
    s.close()
    first.close()


# ---- bytes that are not a startup packet ----

def answer(port, payload, then=None, timeout=5):
    """Send payload (and, after the first answer byte, `then`); return what
    came back before the connection was closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    try:
        s.sendall(payload)
        if then is not None:
            got += s.recv(1)
            s.sendall(then)
        if not payload and then is None:
            s.shutdown(socket.SHUT_WR)
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                return got
            if not d:
                return got
            got += d
    finally:
        s.close()


def not_a_startup_packet():
    rnd = random.Random(9)
    random8 = bytes([rnd.randrange(0x80, 0x100)] + [rnd.randrange(256) for _ in range(7)])
    return [
        ("Terminate", b"X\0\0\0\4", None),
        ("8 random bytes", random8, None),
        ("length 4", struct.pack("!I", 4), None),
        ("length 0xffffffff", b"\xff\xff\xff\xff" + b"\0" * 16, None),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
        ("nothing", b"", None),
        ("Terminate after SSLRequest", struct.pack("!II", 8, 80877103), b"X\0\0\0\4"),
        ("cancel request of a wrong length", struct.pack("!III", 12, 80877102, 1), None),
    ]


@pytest.mark.parametrize("name,payload,then", not_a_startup_packet(), ids=[c[0] for c in not_a_startup_packet()])
def test_bytes_before_startup_close_silently(pg, bouncer, name, payload, then):
    want = answer(pg.port, payload, then)
    assert want in (b"", b"N"), want  # what PostgreSQL 15 does: no ErrorResponse
    assert answer(bouncer.port, payload, then) == want, name
    with bouncer.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_unsupported_protocol_still_gets_a_fatal(pg, bouncer):
    # where PostgreSQL answers with a FATAL, so does pgtenant
    for payload in (struct.pack("!II", 8, 4 << 16),
                    struct.pack("!II", 16, 196608) + b"user\0abc"):
        assert answer(pg.port, payload)[:1] == b"E"
        got = answer(bouncer.port, payload)
        t, body = got[:1], got[5:]
        assert t == b"E" and pgwire.error_fields(body)["S"] == "FATAL"


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_server_fatal_reaches_the_client_alone(bouncer_factory, mode):
    """pg_terminate_backend on the client's own backend: the client gets
    PostgreSQL's FATAL 57P01 and then EOF, not a second error of pgtenant's."""
    b = bouncer_factory(settings={"pool_mode": mode, "default_pool_size": "1"})
    s, _ = pgwire.login(b)
    s.sendall(pgwire.msg(b"Q", b"SELECT pg_terminate_backend(pg_backend_pid())\0"))
    errors = []
    try:
        while True:
            t, body = pgwire.recv_msg(s)
            if t == b"E":
                errors.append(pgwire.error_fields(body))
    except (EOFError, ConnectionError):
        pass
    assert [e["C"] for e in errors] == ["57P01"], errors
    assert errors[0]["S"] == "FATAL"
    # the pool recovers for the next client
    c, _ = pgwire.login(b)
    assert pgwire.data_rows(pgwire.query(c, "SELECT 1")) == ["1"]


def test_session_mode_backend_key_is_the_real_pid(bouncer_factory):
    """Session mode: BackendKeyData carries the client's backend pid, so
    pg_backend_pid(), NOTIFY sender pids and pg_terminate_backend agree with
    what the driver was told; cancel still works through pgtenant."""
    import threading
    import time
    b = bouncer_factory(settings={"pool_mode": "session", "default_pool_size": "4"})
    with b.connect() as a, b.connect() as c:
        assert a.info.backend_pid == a.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert c.info.backend_pid == c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert a.info.backend_pid != c.info.backend_pid
        a.execute("LISTEN conf_chan")
        got = []
        a.add_notify_handler(got.append)
        c.execute("NOTIFY conf_chan, 'x'")
        for _ in range(50):
            a.execute("SELECT 1")
            if got:
                break
            time.sleep(0.02)
        assert got and got[0].pid == c.info.backend_pid
        t = threading.Timer(0.5, a.cancel)
        t.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            a.execute("SELECT pg_sleep(10)")
        t.join()
        assert a.execute("SELECT 1").fetchone()[0] == 1


def test_session_mode_reset_returns_to_the_connect_value(bouncer_factory):
    """Session mode: RESET returns to the value the client connected with,
    as on PostgreSQL: server connections are opened with the client's
    startup parameters and kept apart by them (application_name aside, which
    is SET); a pool of one serves clients with different parameters in turn."""
    b = bouncer_factory(settings={"pool_mode": "session", "default_pool_size": "1"})
    for _ in range(3):
        for timeout, dstyle in (("5s", "SQL, DMY"), ("7s", "ISO, MDY"), ("5s", "SQL, DMY")):
            opts = "-c statement_timeout=%s -c DateStyle=%s" % (timeout, dstyle.replace(" ", ""))
            with b.connect(options=opts, application_name="app_%s" % timeout) as c:
                assert c.execute("SHOW statement_timeout").fetchone()[0] == timeout
                c.execute("SET statement_timeout = '1s'")
                c.execute("SET DateStyle = 'German'")
                c.execute("RESET statement_timeout")
                c.execute("RESET DateStyle")
                assert c.execute("SHOW statement_timeout").fetchone()[0] == timeout
                assert c.execute("SHOW DateStyle").fetchone()[0] == dstyle
                assert c.execute("SHOW application_name").fetchone()[0] == "app_%s" % timeout
                c.execute("RESET ALL")
                assert c.execute("SHOW statement_timeout").fetchone()[0] == timeout
    # one pool: never more than its one connection
    assert b.pg.backends() <= 1


def _replication_login(b, mode):
    return pgwire.login(b, extra={"replication": mode})[0]


def test_replication_connections_pass_through(bouncer_factory, pg):
    """replication=database and replication=true (PgBouncer 1.23+): the
    client gets a server connection of its own, in session mode whatever
    pool_mode says, with the replication protocol passed through (commands,
    CopyBoth streaming); it is closed when the client leaves, never given to
    another client."""
    pg.sql("ALTER ROLE app REPLICATION")
    b = bouncer_factory(settings={"pool_mode": "transaction", "default_pool_size": "2"})
    lg = _replication_login(b, "database")
    rows = pgwire.result(pgwire.query(lg, "IDENTIFY_SYSTEM"))[1]
    assert len(rows) == 1 and rows[0][3] == "appdb"  # systemid, timeline, xlogpos, dbname
    assert pgwire.data_rows(pgwire.query(lg, "SELECT 41 + 1")) == ["42"]
    clients = [c for c in b.admin("SHOW CLIENTS") if c["database"] == "appdb"]
    assert [c["replication"] for c in clients] == ["logical"]
    ph = _replication_login(b, "true")
    sysid, timeline, xlogpos, dbname = pgwire.result(pgwire.query(ph, "IDENTIFY_SYSTEM"))[1][0]
    assert dbname is None
    ph.sendall(pgwire.msg(b"Q", ("START_REPLICATION PHYSICAL %s TIMELINE %s\0" % (xlogpos, timeline)).encode()))
    t, _ = pgwire.recv_msg(ph)
    assert t == b"W"  # CopyBothResponse
    with b.connect() as other:  # an ordinary client meanwhile: its own pool
        other.execute("CREATE TABLE IF NOT EXISTS repl_probe(x int); INSERT INTO repl_probe VALUES (1)")
    got_wal = False
    for _ in range(50):
        t, body = pgwire.recv_msg(ph)
        assert t == b"d"
        if body[:1] == b"w":
            got_wal = True
            break
    assert got_wal, "no WAL streamed through pgtenant"
    ph.sendall(pgwire.msg(b"c", b""))  # CopyDone: the walsender ends the stream
    lg.close()
    ph.close()
    import time
    deadline = time.time() + 5
    while time.time() < deadline and pg.sql("SELECT count(*) FROM pg_stat_replication")[0][0]:
        time.sleep(0.05)
    assert pg.sql("SELECT count(*) FROM pg_stat_replication")[0][0] == 0
    # a bad value is PostgreSQL's error
    s = pgwire.connect(b)
    s.sendall(pgwire.startup_packet({"user": "app", "database": "appdb", "replication": "maybe"}))
    t, body = pgwire.recv_msg(s)
    assert t == b"E" and pgwire.error_fields(body)["C"] == "22023"


def test_autodb_pools_are_dropped_when_unused(bouncer_factory, pg):
    """Pools made through the "*" entry for any database name asked (here
    names that do not exist) are dropped after autodb_idle_timeout; a pool
    in use is not."""
    import time
    b = bouncer_factory(settings={"autodb_idle_timeout": "1", "server_idle_timeout": "1"},
                        databases={"*": "host=127.0.0.1 port=%d user=app password=apppass" % pg.port})
    for i in range(5):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(b.dsn(dbname="nosuch_%d" % i), autocommit=True).close()
    names = {p["database"] for p in b.admin("SHOW POOLS")}
    assert {"nosuch_%d" % i for i in range(5)} <= names
    with psycopg.connect(b.dsn(dbname="postgres"), autocommit=True) as keep:
        keep.execute("SELECT 1")
        deadline = time.time() + 10
        while time.time() < deadline:
            names = {p["database"] for p in b.admin("SHOW POOLS")}
            if not names & {"nosuch_%d" % i for i in range(5)}:
                break
            time.sleep(0.2)
        assert not names & {"nosuch_%d" % i for i in range(5)}, names
        assert "postgres" in names  # in use
        assert keep.execute("SELECT 2").fetchone()[0] == 2
    assert b.log_contains("dropped: unused for autodb_idle_timeout") >= 5
