"""Backend passwords from files (server_password_file, an entry's
password_file=; P9 Aurora part 4): a mounted secret, JSON
{"username","password"} as AWS Secrets Manager writes it, or one line.

The suite starts its own PostgreSQL whose pg_hba.conf demands SCRAM from
members of sec_scram and md5 from members of sec_md5 over TCP (so a server
login with a wrong or stale password really fails with 28P01), with
log_connections on so that server login attempts can be counted.

Rotation is what a Secrets Manager rotation does: ALTER ROLE ... PASSWORD
first, then the new value reaches the mounted file (rewritten in place,
renamed over, or Kubernetes' ..data symlink swap).  pgtenant must pick it up
on RELOAD, on its own within ~2 s, and at once when the server refuses the
old password (the rotation race), without dropping open connections.
"""
import os
import re
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import APP_PASSWORD, PGTENANT_BIN, Bouncer, Postgres, login_error


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def json_secret(user, password):
    # the shape of an RDS secret of AWS Secrets Manager
    return ('{"engine": "postgres", "host": "127.0.0.1", "port": 5432, "dbname": "appdb", '
            '"username": "%s", "password": "%s", "dbClusterIdentifier": "local"}\n' % (user, password))


@pytest.fixture(scope="module")
def spg():
    pg = Postgres()
    hba = os.path.join(pg.data, "pg_hba.conf")
    with open(hba) as f:
        rest = f.read()
    with open(hba, "w") as f:
        f.write("local all all trust\n"
                "host all +sec_scram 127.0.0.1/32 scram-sha-256\n"
                "host all +sec_md5 127.0.0.1/32 md5\n" + rest)
    pg.sql("ALTER SYSTEM SET log_connections = on")
    pg.sql("SELECT pg_reload_conf()")
    pg.sql("CREATE ROLE sec_scram NOLOGIN; CREATE ROLE sec_md5 NOLOGIN")
    pg.sql("GRANT ALL ON DATABASE appdb TO PUBLIC")
    setup = """
        CREATE SCHEMA tenant_t1; CREATE SCHEMA tenant_t2;
        GRANT ALL ON SCHEMA tenant_t1, tenant_t2 TO PUBLIC;
        CREATE TABLE tenant_t1.rows(who text); CREATE TABLE tenant_t2.rows(who text);
        GRANT ALL ON tenant_t1.rows, tenant_t2.rows TO PUBLIC;
        INSERT INTO tenant_t1.rows SELECT 't1' FROM generate_series(1, 5);
        INSERT INTO tenant_t2.rows SELECT 't2' FROM generate_series(1, 5);
    """
    pg.sql(setup, dbname="appdb")
    yield pg
    pg.stop()


def role(pg, name, password, kind="scram"):
    enc = "md5" if kind == "md5" else "scram-sha-256"
    pg.sql("DROP ROLE IF EXISTS %s" % name)
    pg.sql("SET password_encryption = '%s'; CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE sec_%s"
           % (enc, name, password, kind))


def set_password(pg, name, password, kind="scram"):
    enc = "md5" if kind == "md5" else "scram-sha-256"
    pg.sql("SET password_encryption = '%s'; ALTER ROLE %s PASSWORD '%s'" % (enc, name, password))


def pg_log(pg):
    with open(os.path.join(pg.dir, "log"), errors="replace") as f:
        return f.read()


def refused(pg, name):
    """Server logins of role `name` refused so far (28P01)."""
    return len(re.findall(r'password authentication failed for user "%s"' % name, pg_log(pg)))


def authorized(pg, name):
    """Server logins of role `name` that passed so far (log_connections)."""
    return len(re.findall(r"connection authorized: user=%s " % name, pg_log(pg)))


@pytest.fixture
def make(spg, tmp_path):
    made = []

    def mk(databases, settings=None, start=True, **kw):
        d = tmp_path / ("b%d" % len(made))
        d.mkdir()
        s = {"server_login_retry": "1"}
        s.update(settings or {})
        dbs = {k: ("host=127.0.0.1 port=%d dbname=appdb " % spg.port) + v for k, v in databases.items()}
        b = Bouncer(spg, str(d), settings=s, databases=dbs, start=start, **kw)
        made.append(b)
        return b

    yield mk
    for b in made:
        b.stop()


def connect(b, dbname, **kw):
    return psycopg.connect(b.dsn("app", dbname, **kw), autocommit=True, prepare_threshold=None)


def who(conn):
    return conn.execute("SELECT current_user, pg_backend_pid()").fetchone()


def wait_log(b, pattern, count=1, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if b.log_contains(pattern) >= count:
            return True
        time.sleep(0.05)
    return False


# ---- a) the file is used, and wins ----

def test_json_and_one_line_files_win_over_password_and_user(make, spg):
    role(spg, "sec_a", "a-pass-1")
    role(spg, "sec_a_md5", "a-md5-1", "md5")
    b = make({}, start=False)
    write(os.path.join(b.dir, "secret.json"), json_secret("sec_a", "a-pass-1"))
    write(os.path.join(b.dir, "line.txt"), "a-pass-1\n")
    write(os.path.join(b.dir, "crlf.txt"), "a-pass-1\r\n")
    write(os.path.join(b.dir, "md5.json"), json_secret("sec_a_md5", "a-md5-1"))
    b.databases.update({
        # a wrong password= and user=: the file's username and password win;
        # a relative path is relative to the config file's directory
        "jsondb": "host=127.0.0.1 port=%d dbname=appdb user=app password=wrong password_file=secret.json"
                  % spg.port,
        "linedb": "host=127.0.0.1 port=%d dbname=appdb user=sec_a password=wrong password_file=%s"
                  % (spg.port, os.path.join(b.dir, "line.txt")),
        "crlfdb": "host=127.0.0.1 port=%d dbname=appdb user=sec_a password_file=crlf.txt" % spg.port,
        # md5 hashes the password with the role the file names, not user=
        "md5db": "host=127.0.0.1 port=%d dbname=appdb user=app password=wrong password_file=md5.json"
                 % spg.port,
    })
    b.write_config()
    b.start()
    for db, user in (("jsondb", "sec_a"), ("linedb", "sec_a"), ("crlfdb", "sec_a"), ("md5db", "sec_a_md5")):
        with connect(b, db) as conn:
            assert who(conn)[0] == user, db
            # pgtenant's own TCP login, which pg_hba.conf lets in only with the password
            assert conn.execute("SELECT host(inet_client_addr())").fetchone()[0] == "127.0.0.1"
    assert refused(spg, "sec_a") == 0 and refused(spg, "sec_a_md5") == 0
    rows = {r["name"]: r for r in b.admin("SHOW DATABASES")}
    assert rows["jsondb"]["force_user"] == "sec_a"
    assert rows["md5db"]["force_user"] == "sec_a_md5"
    assert rows["linedb"]["force_user"] == "sec_a"


def test_global_server_password_file(make, spg):
    role(spg, "sec_g", "g-pass-1")
    b = make({}, start=False)
    write(os.path.join(b.dir, "global.json"), json_secret("sec_g", "g-pass-1"))
    b.settings["server_password_file"] = "global.json"
    b.databases["gdb"] = "host=127.0.0.1 port=%d dbname=appdb" % spg.port
    b.write_config()
    b.start()
    with connect(b, "gdb") as conn:
        assert who(conn)[0] == "sec_g"


# ---- b) rotation with RELOAD ----

def test_rotation_with_reload_keeps_open_connections(make, spg):
    role(spg, "sec_rot", "rot-1")
    b = make({}, start=False, settings={"default_pool_size": "10"})
    secret = os.path.join(b.dir, "rot.json")
    write(secret, json_secret("sec_rot", "rot-1"))
    b.databases.update({
        "sessdb": "host=127.0.0.1 port=%d dbname=appdb user=app password_file=rot.json pool_mode=session"
                  % spg.port,
        "txdb": "host=127.0.0.1 port=%d dbname=appdb user=app password_file=rot.json pool_mode=transaction"
                % spg.port,
    })
    b.write_config()
    b.start()
    sess = [connect(b, "sessdb") for _ in range(2)]
    sess_pids = [who(c)[1] for c in sess]
    tx = psycopg.connect(b.dsn("app", "txdb"), autocommit=False, prepare_threshold=None)
    tx_pid = tx.execute("SELECT pg_backend_pid()").fetchone()[0]  # a transaction stays open
    authorized_before = authorized(spg, "sec_rot")

    set_password(spg, "sec_rot", "rot-2")
    write(secret, json_secret("sec_rot", "rot-2"))
    b.admin("RELOAD")
    assert wait_log(b, r"password file .*rot\.json re-read \(reload\): password changed|"
                       r"password file .*rot\.json re-read \(the file changed\): password changed")

    # new server logins: more session clients than open server connections,
    # and a second transaction-mode client while the first holds its server
    more = [connect(b, "sessdb") for _ in range(2)]
    more_pids = [who(c)[1] for c in more]
    tx2 = connect(b, "txdb")
    tx2_pid = who(tx2)[1]
    assert not set(more_pids) & set(sess_pids) and tx2_pid != tx_pid
    assert authorized(spg, "sec_rot") >= authorized_before + 3
    assert refused(spg, "sec_rot") == 0  # the new password was used at once

    # the open connections were not dropped: the same backends answer
    assert [who(c)[1] for c in sess] == sess_pids
    assert tx.execute("SELECT pg_backend_pid()").fetchone()[0] == tx_pid
    tx.commit()
    assert tx.execute("SELECT pg_backend_pid()").fetchone()[0] in (tx_pid, tx2_pid)
    tx.commit()
    alive = {r[0] for r in spg.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'sec_rot'")}
    assert set(sess_pids) | {tx_pid} <= alive
    assert b.log_contains(r"S-\d+ .*closing because") == 0  # no server connection closed
    for c in sess + more + [tx, tx2]:
        c.close()


def test_username_rotation_keeps_the_old_pool(make, spg):
    """Secrets Manager's alternating-users rotation: the secret names another
    role.  New clients log in as it (a new pool: pools are keyed by the
    server user); the transaction open on the old role's connection goes
    on; the old pool's next server login takes the new role (md5-hashed
    with the new role's name)."""
    role(spg, "sec_u1", "u1-pass")
    role(spg, "sec_u2", "u2-pass", "md5")
    b = make({}, start=False, settings={"default_pool_size": "10", "server_lifetime": "1"})
    secret = os.path.join(b.dir, "u.json")
    write(secret, json_secret("sec_u1", "u1-pass"))
    b.databases["udb"] = ("host=127.0.0.1 port=%d dbname=appdb user=app password_file=u.json "
                          "pool_mode=transaction" % spg.port)
    b.write_config()
    b.start()
    old = psycopg.connect(b.dsn("app", "udb"), autocommit=False, prepare_threshold=None)
    old_user, old_pid = who(old)  # a transaction stays open on it
    assert old_user == "sec_u1"
    write(secret, json_secret("sec_u2", "u2-pass"))
    assert wait_log(b, r"re-read \(the file changed\): password and username changed", timeout=3)
    with connect(b, "udb") as new:
        assert who(new)[0] == "sec_u2"
    assert who(old) == (old_user, old_pid)
    old.commit()
    pools = {(p["database"], p["user"]) for p in b.admin("SHOW POOLS")}
    assert ("udb", "sec_u1") in pools and ("udb", "sec_u2") in pools
    # server_lifetime closes the sec_u1 connection once idle; the old pool's
    # client then needs a new login, which takes the file's role now
    deadline = time.time() + 5
    while time.time() < deadline and old_pid in {r[0] for r in spg.sql(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'sec_u1'")}:
        time.sleep(0.1)
    assert who(old)[0] == "sec_u2"
    old.commit()
    assert refused(spg, "sec_u2") == 0
    assert b.log_contains("server connection failed") == 0
    old.close()


# ---- c) rotation without RELOAD ----

def _rotate_without_reload(b, spg, secret, name, n, how):
    set_password(spg, name, "%s-%d" % (name, n))
    text = json_secret(name, "%s-%d" % (name, n))
    if how == "in place":
        with open(secret, "r+") as f:
            f.seek(0)
            f.truncate()
            f.write(text)
    elif how == "rename":
        tmp = secret + ".tmp"
        write(tmp, text)
        os.replace(tmp, secret)
    else:  # Kubernetes: secret -> ..data/secret, ..data -> ..<ts>; ..data swapped atomically
        d = os.path.dirname(secret)
        ts = os.path.join(d, "..v%d" % n)
        os.mkdir(ts)
        write(os.path.join(ts, os.path.basename(secret)), text)
        os.symlink(os.path.basename(ts), os.path.join(d, "..data_tmp"))
        os.replace(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))


@pytest.mark.parametrize("how", ["in place", "rename", "kubernetes"])
def test_rotation_without_reload(make, spg, how):
    name = "sec_w" + {"in place": "i", "rename": "r", "kubernetes": "k"}[how]
    role(spg, name, "%s-0" % name)
    b = make({}, start=False, settings={"default_pool_size": "20"})
    if how == "kubernetes":
        os.mkdir(os.path.join(b.dir, "secret"))
        ts = os.path.join(b.dir, "secret", "..v0")
        os.mkdir(ts)
        write(os.path.join(ts, "db.json"), json_secret(name, "%s-0" % name))
        os.symlink("..v0", os.path.join(b.dir, "secret", "..data"))
        os.symlink("..data/db.json", os.path.join(b.dir, "secret", "db.json"))
    else:
        os.mkdir(os.path.join(b.dir, "secret"))
        write(os.path.join(b.dir, "secret", "db.json"), json_secret(name, "%s-0" % name))
    secret = os.path.join(b.dir, "secret", "db.json")
    b.databases["wdb"] = ("host=127.0.0.1 port=%d dbname=appdb user=app password_file=secret/db.json "
                          "pool_mode=session" % spg.port)
    b.write_config()
    b.start()
    held = [connect(b, "wdb")]
    pids = [who(held[0])[1]]
    for n in (1, 2):
        _rotate_without_reload(b, spg, secret, name, n, how)
        # seen by the stat() watch within ~2 s, before any login needs it
        assert wait_log(b, r"re-read \(the file changed\): password changed", count=n, timeout=2.5), b.log()[-2000:]
        c = connect(b, "wdb")  # more clients than server connections: a new login
        held.append(c)
        pids.append(who(c)[1])
        assert len(set(pids)) == len(pids)
    assert refused(spg, name) == 0  # never a stale password: the watch, not the 28P01 retry
    assert b.log_contains("server refused the password") == 0
    assert b.log_contains("configuration reloaded") == 0
    assert [who(c)[1] for c in held] == pids  # nothing dropped
    for c in held:
        c.close()


# ---- d) the rotation race ----

def test_28p01_rereads_the_file_and_retries_once(make, spg):
    name = "sec_race"
    role(spg, name, "race-0")
    b = make({}, start=False, settings={"default_pool_size": "20"})
    secret = os.path.join(b.dir, "race.json")
    write(secret, json_secret(name, "race-0"))
    b.databases["racedb"] = ("host=127.0.0.1 port=%d dbname=appdb user=app password_file=race.json "
                             "pool_mode=session" % spg.port)
    b.write_config()
    b.start()
    held = [connect(b, "racedb")]
    raced = False
    for n in range(1, 8):
        refused_before = refused(spg, name)
        set_password(spg, name, "race-%d" % n)
        # the file is updated and a client arrives before the once-a-second
        # stat() check can notice: the server login uses the old password
        write(secret, json_secret(name, "race-%d" % n))
        log_start = len(b.log())
        c = connect(b, "racedb")  # no error for the client
        held.append(c)
        assert who(c)[0] == name
        if refused(spg, name) > refused_before:
            raced = True
            assert refused(spg, name) == refused_before + 1
            break
        time.sleep(1.2)  # the watch won this time: try again
    assert raced, "the stat() watch always won the race"
    # the 28P01 re-reads the file.  Usually that read finds the new password;
    # when the watch's stat() read it while the refused login was under way
    # (a slow, sanitized build), it finds it unchanged, and the login is made
    # again all the same, since the refused one used an older version.
    log = b.log()[log_start:]
    assert len(re.findall(r"re-read \(the server refused the password\): (password changed|unchanged)",
                          log)) == 1, log
    assert len(re.findall(r"re-read \((the server refused the password|the file changed)\): "
                          r"password changed", log)) == 1, log
    assert b.log_contains("logging in again with the new one") == 1
    assert b.log_contains("server connection failed") == 0
    for c in held:
        c.close()


def test_28p01_with_an_unchanged_file_fails_without_looping(make, spg):
    name = "sec_stale"
    role(spg, name, "stale-0")
    b = make({}, start=False, settings={"default_pool_size": "20"})
    write(os.path.join(b.dir, "stale.json"), json_secret(name, "stale-0"))
    for db in ("heldb", "staledb"):
        b.databases[db] = ("host=127.0.0.1 port=%d dbname=appdb user=app password_file=stale.json "
                           "pool_mode=session" % spg.port)
    b.write_config()
    b.start()
    held = connect(b, "heldb")
    pid = who(held)[1]
    set_password(spg, name, "stale-1")  # the file is not updated
    before = refused(spg, name)
    # a pool without server connections: its client is failed at once
    code, msg = login_error(b, dbname="staledb", password=APP_PASSWORD)
    assert code == "08006" and "server connection failed" in msg, (code, msg)
    time.sleep(2.5)  # server_login_retry is 1 s: a loop would show by now
    assert refused(spg, name) == before + 1
    assert b.log_contains(r"re-read \(the server refused the password\): unchanged") == 1
    assert b.log_contains("logging in again with the new one") == 0
    assert who(held)[1] == pid  # the open connection is not affected
    held.close()


# ---- e) a broken file keeps the last good password; --check ----

@pytest.mark.parametrize("breakage", ["empty", "missing", "broken json"])
def test_broken_file_keeps_the_last_good_password(make, spg, breakage):
    name = "sec_keep"
    role(spg, name, "keep-0")
    b = make({}, start=False, settings={"default_pool_size": "20"})
    secret = os.path.join(b.dir, "keep.json")
    write(secret, json_secret(name, "keep-0"))
    b.databases["keepdb"] = ("host=127.0.0.1 port=%d dbname=appdb user=app password_file=keep.json "
                             "pool_mode=session" % spg.port)
    b.write_config()
    b.start()
    held = connect(b, "keepdb")
    pid = who(held)[1]
    if breakage == "empty":
        write(secret, "")
        err = "empty"
    elif breakage == "missing":
        os.unlink(secret)
        err = "cannot open: No such file or directory"
    else:
        write(secret, '{"username": "%s",\n "password": "keep-' % name)
        err = r"not valid JSON \(line \d+, column \d+\)"
    assert wait_log(b, r"ERROR password file %s \(the file changed\): %s; keeping the previous password"
                    % (re.escape(secret), err), timeout=2.5), b.log()[-2000:]
    with connect(b, "keepdb") as c:  # a new server login, with the last good password
        assert who(c)[0] == name and who(c)[1] != pid
    assert who(held)[1] == pid
    assert refused(spg, name) == 0
    # a RELOAD while the file is broken is refused as a whole (the old
    # config and the last good password stay)
    with pytest.raises(psycopg.Error, match="reload failed"):
        b.admin("RELOAD")
    assert b.log_contains(r"password file %s: " % re.escape(secret)) >= 1
    with connect(b, "keepdb") as c:
        assert who(c)[0] == name
    # fixed: taken again
    write(secret, json_secret(name, "keep-0"))
    assert wait_log(b, r"password file .*keep\.json re-read \(the file changed\): unchanged", timeout=2.5)
    held.close()


def test_check_reports_an_unusable_password_file_at_its_line(make, spg):
    b = make({}, start=False)
    write(os.path.join(b.dir, "ok.json"), json_secret("app", APP_PASSWORD))
    write(os.path.join(b.dir, "empty.txt"), "")
    b.databases["okdb"] = "host=127.0.0.1 port=%d dbname=appdb password_file=ok.json" % spg.port
    b.databases["missdb"] = "host=127.0.0.1 port=%d dbname=appdb password_file=nope.json" % spg.port
    b.databases["emptydb"] = "host=127.0.0.1 port=%d dbname=appdb password_file=empty.txt" % spg.port
    b.settings["server_password_file"] = "/nonexistent/secret"
    b.write_config()
    lines = open(b.ini).read().splitlines()
    lineno = {l.split(" =")[0]: i + 1 for i, l in enumerate(lines) if " = " in l}
    r = subprocess.run([PGTENANT_BIN, "--check", b.ini], capture_output=True, text=True)
    assert r.returncode == 1
    assert "%s:%d: password file %s: cannot open" % (b.ini, lineno["missdb"], os.path.join(b.dir, "nope.json")) \
        in r.stderr, r.stderr
    assert "%s:%d: password file %s: empty" % (b.ini, lineno["emptydb"], os.path.join(b.dir, "empty.txt")) \
        in r.stderr
    assert "%s:%d: password file /nonexistent/secret: cannot open" % (b.ini, lineno["server_password_file"]) \
        in r.stderr
    assert "okdb" not in r.stderr and APP_PASSWORD not in r.stderr
    # and it does not start
    r = subprocess.run([PGTENANT_BIN, b.ini], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "not starting" in r.stderr
    # fixed: --check passes
    write(os.path.join(b.dir, "nope.json"), "x\n")
    write(os.path.join(b.dir, "empty.txt"), "y\n")
    b.settings["server_password_file"] = "ok.json"
    b.write_config()
    r = subprocess.run([PGTENANT_BIN, "--check", b.ini], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- f) no password anywhere ----

def test_no_password_in_the_log_or_the_console(make, spg):
    name = "sec_quiet"
    role(spg, name, "Quiet-Secret-0")
    b = make({}, start=False, settings={"default_pool_size": "20"})
    secret = os.path.join(b.dir, "quiet.json")
    write(secret, json_secret(name, "Quiet-Secret-0"))
    for db in ("quietdb", "quietdb2"):
        b.databases[db] = ("host=127.0.0.1 port=%d dbname=appdb user=app password_file=quiet.json "
                           "pool_mode=session" % spg.port)
    b.write_config()
    b.start("-v", "-v")  # the most verbose
    held = [connect(b, "quietdb")]
    set_password(spg, name, "Quiet-Secret-1")
    write(secret, json_secret(name, "Quiet-Secret-1"))
    held.append(connect(b, "quietdb"))  # 28P01 race or watch: either way a re-read
    set_password(spg, name, "Quiet-Secret-2")
    code, _ = login_error(b, dbname="quietdb2", password=APP_PASSWORD)  # 28P01, unchanged file
    assert code == "08006"
    write(secret, '{"password": "Quiet-Secret-3",\n')  # broken: its parse error must not quote it
    assert wait_log(b, r"quiet\.json \(the file changed\): not valid JSON", timeout=2.5)
    write(secret, "Quiet-Secret-4\r\n")
    b.admin("RELOAD")
    show = repr(b.admin("SHOW CONFIG")) + repr(b.admin("SHOW DATABASES")) + repr(b.admin("SHOW POOLS")) + \
        repr(b.admin("SHOW SERVERS"))
    for c in held:
        c.close()
    b.stop()
    text = b.log() + show
    assert "Quiet-Secret" not in text
    assert b.log().count("password file") >= 4  # the log does talk about the file


# ---- g) tenants stay apart during rotations ----

def test_cross_tenant_isolation_during_rotation(make, spg):
    """Two tenants, pool_size 1 each, clients running concurrently while the
    secret rotates the way Secrets Manager's alternating-users strategy
    does (the other role's password changes, then the secret names it), and
    server connections are replaced every second: every row each tenant
    sees is its own, and no client gets an error."""
    roles = ("sec_ten_a", "sec_ten_b")
    for r in roles:
        role(spg, r, r + "-0")
    b = make({}, start=False, settings={"tenant_required": "yes", "tenant_pool_size": "1",
                                        "default_pool_size": "1", "server_lifetime": "1",
                                        "server_idle_timeout": "1"},
             tenants={"t1": "pool_size=1", "t2": "pool_size=1"})
    secret = os.path.join(b.dir, "ten.json")
    write(secret, json_secret(roles[0], roles[0] + "-0"))
    b.databases["tendb"] = ("host=127.0.0.1 port=%d dbname=appdb user=app password_file=ten.json "
                            "pool_mode=transaction" % spg.port)
    b.write_config()
    b.start()
    errors = []
    stop = threading.Event()
    counts = {"t1": 0, "t2": 0}

    def worker(tenant):
        try:
            with connect(b, "tendb", options="-c tenant=%s" % tenant) as conn:
                while not stop.is_set():
                    got = {r[0] for r in conn.execute("SELECT who FROM rows")}
                    if got != {tenant}:
                        errors.append((tenant, got))
                    path = conn.execute("SHOW search_path").fetchone()[0]
                    if tenant not in path:
                        errors.append((tenant, path))
                    counts[tenant] += 1
                    time.sleep(0.01)
        except Exception as e:  # noqa: BLE001 - any failure fails the test
            errors.append((tenant, repr(e)))

    before = sum(authorized(spg, r) for r in roles)
    threads = [threading.Thread(target=worker, args=(t,)) for t in ("t1", "t2") for _ in range(3)]
    for t in threads:
        t.start()
    for n in range(1, 5):
        time.sleep(0.8)
        r = roles[n % 2]
        set_password(spg, r, "%s-%d" % (r, n))
        write(secret, json_secret(r, "%s-%d" % (r, n)))
    time.sleep(2.5)  # server_lifetime 1 s: logins with the newest secret meanwhile
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert counts["t1"] > 20 and counts["t2"] > 20
    # new server logins happened during the rotations, as both roles
    assert sum(authorized(spg, r) for r in roles) >= before + 6
    assert authorized(spg, roles[1]) >= 2
    assert b.log_contains("server connection failed") == 0
    assert refused(spg, roles[0]) == 0 and refused(spg, roles[1]) == 0
