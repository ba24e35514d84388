"""server_auth = iam: pgtenant logs in to servers with an RDS IAM token.

The server is a loopback peer written here that speaks the PostgreSQL
startup protocol over TLS (a suite-made certificate, sslmode verify-full),
asks for a cleartext password, records it, and then logs the client in and
answers one transaction before it closes (so that the next client makes a
new server login).  Every token it receives is compared with what botocore
makes for the same credentials, host, port, region and user at the
token's own X-Amz-Date (iamtoken.py): equal strings, so the signature too.

Credentials come from the environment, a shared credentials file with
AWS_PROFILE (a session token longer than inih's line limit), a fake ECS/EKS
container endpoint with an Authorization token from a file (EKS Pod
Identity), and a fake IMDSv2 whose credentials expire 20 s after they are
handed out: pgtenant fetches new ones before that.  A slow endpoint stalls
no other pool, a failing one fails the login with 08006 and a log line.
No log line and no audit line ever holds a token, a secret key or a
session token.
"""
import datetime
import http.server
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

import psycopg
import pytest

from conftest import APP_PASSWORD, PGTENANT_BIN, free_port, login_error
from iamtoken import botocore_token, token_params, token_time
from tlscerts import CertMaker

REGION = "eu-west-1"
SERVER_USER = "app+x@y"
AKID = "AKIAENVEXAMPLE000001"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYENVSECRET1"
SESSION = "FwoGZXIvYXdzEENVSESSION/token+with=odd&chars" + "Q" * 300

pytestmark = pytest.mark.skipif(not PGTENANT_BIN, reason="PGTENANT_BIN not set")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    m = CertMaker(tmp_path_factory.mktemp("iamcerts"))
    ca = m.ca("ca", "pgtenant iam test CA")
    server = m.issue("server", "localhost", ca, san=("DNS:localhost", "IP:127.0.0.1"))
    return ca, server


# ---- the fake PostgreSQL server ----

def _recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _msg(t, body=b""):
    return t + struct.pack("!I", 4 + len(body)) + body


class FakePG:
    """TLS-only PostgreSQL peer: records (startup user, password) of each login."""

    def __init__(self, certs, accept=True):
        ca, server = certs
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(server.cert, server.key)
        self.accept = accept
        self.logins = []  # (user, password)
        self.plaintext_startups = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw):
        try:
            raw.settimeout(30)
            (ln,) = struct.unpack("!I", _recv_exact(raw, 4))
            body = _recv_exact(raw, ln - 4)
            if struct.unpack("!I", body[:4])[0] != 80877103:
                self.plaintext_startups += 1
                return
            raw.sendall(b"S")
            s = self.ctx.wrap_socket(raw, server_side=True)
            (ln,) = struct.unpack("!I", _recv_exact(s, 4))
            body = _recv_exact(s, ln - 4)
            parts = body[4:].split(b"\0")
            params = dict(zip(parts[0::2], parts[1::2]))
            s.sendall(_msg(b"R", struct.pack("!I", 3)))
            t = _recv_exact(s, 1)
            (ln,) = struct.unpack("!I", _recv_exact(s, 4))
            pw = _recv_exact(s, ln - 4)
            assert t == b"p" and pw.endswith(b"\0")
            self.logins.append((params.get(b"user", b"").decode(), pw[:-1].decode()))
            if not self.accept:
                s.sendall(_msg(b"E", b"SFATAL\0C28P01\0MPAM authentication failed for user\0\0"))
                return
            self._login_ok(s)
            self._one_transaction(s)
        except (EOFError, OSError, ssl.SSLError, AssertionError):
            pass
        finally:
            raw.close()

    @staticmethod
    def _login_ok(s):
        out = _msg(b"R", struct.pack("!I", 0))
        for k, v in (("server_version", "16.4"), ("server_encoding", "UTF8"), ("client_encoding", "UTF8"),
                     ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"), ("TimeZone", "UTC"),
                     ("standard_conforming_strings", "on"), ("is_superuser", "off"),
                     ("in_hot_standby", "off"), ("default_transaction_read_only", "off")):
            out += _msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
        out += _msg(b"K", struct.pack("!II", 4242, 1234)) + _msg(b"Z", b"I")
        s.sendall(out)

    @staticmethod
    def _one_transaction(s):
        """Answer everything up to the first Sync or Query with one int4 column
        "1", then close (the next client needs a new server login)."""
        rowdesc = _msg(b"T", struct.pack("!H", 1) + b"x\0" + struct.pack("!IHIhih", 0, 0, 23, 4, -1, 0))
        row = _msg(b"D", struct.pack("!HI", 1, 1) + b"1")
        done = _msg(b"C", b"SELECT 1\0")
        while True:
            t = _recv_exact(s, 1)
            (ln,) = struct.unpack("!I", _recv_exact(s, 4))
            _recv_exact(s, ln - 4)
            if t == b"Q":
                s.sendall(rowdesc + row + done + _msg(b"Z", b"I"))
                return
            if t == b"P":
                s.sendall(_msg(b"1"))
            elif t == b"B":
                s.sendall(_msg(b"2"))
            elif t == b"D":
                s.sendall(rowdesc)
            elif t == b"E":
                s.sendall(row + done)
            elif t == b"C":
                s.sendall(_msg(b"3"))
            elif t == b"S":
                s.sendall(_msg(b"Z", b"I"))
                time.sleep(0.2)
                return
            elif t == b"X":
                return

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def fakepg(certs):
    f = FakePG(certs)
    yield f
    f.close()


# ---- fake credential endpoints ----

class FakeHTTP:
    """An HTTP server on loopback whose handler is handle(method, path, headers) -> (status, body)."""

    def __init__(self, handle):
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def _do(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                status, body = handle(self.command, self.path, self.headers)
                if status is None:
                    return
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = _do

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        outer.url = "http://127.0.0.1:%d" % self.port

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeIMDS:
    """IMDSv2: PUT /latest/api/token first; a GET without the session token gets 401.
    Each credential document is new (ASIAIMDS<n>) and expires `lifetime` s later."""

    def __init__(self, lifetime=20, fail=()):
        self.lifetime = lifetime
        self.fail = set(fail)  # numbers of credential requests answered 500
        self.requests = 0
        self.failed = []  # times
        self.session = "imds-session-token-%d" % os.getpid()
        self.fetches = []  # (time, access key id, expiration)
        self.rejected = 0
        self.puts = 0
        self.http = FakeHTTP(self.handle)
        self.url = self.http.url

    def handle(self, method, path, headers):
        if method == "PUT":
            if path != "/latest/api/token" or not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return 400, ""
            self.puts += 1
            return 200, self.session
        if headers.get("X-aws-ec2-metadata-token") != self.session:
            self.rejected += 1
            return 401, ""
        if path == "/latest/meta-data/iam/security-credentials/":
            return 200, "pgtenant-role"
        if path == "/latest/meta-data/iam/security-credentials/pgtenant-role":
            self.requests += 1
            if self.requests in self.fail:
                self.failed.append(time.time())
                return 500, ""
            n = len(self.fetches) + 1
            now = time.time()
            doc = {"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAIMDS%04d" % n,
                   "SecretAccessKey": "imds/secret+%d" % n, "Token": "imds-session-%d/%s" % (n, "T" * 200),
                   "Expiration": iso(now + self.lifetime), "LastUpdated": iso(now)}
            self.fetches.append((now, doc["AccessKeyId"], now + self.lifetime, doc))
            return 200, json.dumps(doc)
        return 404, ""

    def close(self):
        self.http.close()


# ---- helpers ----

def clean_env(tmp_path, **extra):
    """No AWS setting from the machine running the suite: empty HOME, no
    instance metadata, every AWS_ variable removed; then extra."""
    env = {k: None for k in os.environ if k.startswith("AWS_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update({"HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra)
    return env


def iam_entry(port, certs, user=SERVER_USER, extra=" aws_region=" + REGION):
    ca, _ = certs
    return ("host=localhost port=%d dbname=appdb user='%s' server_auth=iam sslmode=verify-full%s"
            % (port, user, extra))


def make(bouncer_factory, certs, fake, env, settings=None, extra_dbs=None, start=True, user=SERVER_USER,
         entry_extra=" aws_region=" + REGION):
    ca, _ = certs
    s = {"server_tls_ca_file": ca.cert, "server_connect_timeout": "10"}
    s.update(settings or {})
    dbs = {"iamdb": iam_entry(fake.port, certs, user, entry_extra)}
    dbs.update(extra_dbs or {})
    return bouncer_factory(settings=s, databases=dbs, env=env, start=start)


def query_one(b, dbname="iamdb"):
    with b.connect(dbname=dbname) as c:
        return c.execute("select 1").fetchone()[0]


def expect_botocore(tok, access, secret, session, port, user=SERVER_USER, region=REGION, host="localhost"):
    """tok is exactly botocore's token for these credentials at its X-Amz-Date."""
    when = token_time(tok)
    assert abs((datetime.datetime.utcnow() - when).total_seconds()) < 120, tok
    assert tok == botocore_token(access, secret, session, host, port, region, user, when)


def assert_no_secrets(b, secrets, extra_files=()):
    texts = [b.log()] + [open(f, errors="replace").read() for f in extra_files if os.path.exists(f)]
    assert texts[0], "pgtenant wrote no log"
    for s in secrets:
        if not s:
            continue
        for t in texts:
            assert s not in t, "a secret appears in pgtenant's output"
            # a secret with URL escapes (as it appears in a token) neither
            assert urllib.parse.quote(s, safe="") not in t


import urllib.parse  # noqa: E402


def wait_for(cond, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# ---- a) the token botocore makes ----

def test_token_is_botocores(bouncer_factory, certs, fakepg, tmp_path):
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SESSION)
    b = make(bouncer_factory, certs, fakepg, env)
    assert query_one(b) == 1
    assert len(fakepg.logins) == 1
    user, tok = fakepg.logins[0]
    assert user == SERVER_USER
    assert tok.startswith("localhost:%d/?Action=connect&DBUser=app%%2Bx%%40y&" % fakepg.port)
    p = token_params(tok)
    assert p["X-Amz-Credential"].startswith(AKID + "/") and p["X-Amz-Credential"].endswith(
        "/%s/rds-db/aws4_request" % REGION)
    assert p["X-Amz-Expires"] == "900" and p["X-Amz-Security-Token"] == SESSION
    expect_botocore(tok, AKID, SECRET, SESSION, fakepg.port)
    # the same server, user and credentials within 10 minutes: the cached token
    wait_for(lambda: b.admin("SHOW SERVERS") == [])
    assert query_one(b) == 1
    assert len(fakepg.logins) == 2 and fakepg.logins[1][1] == tok
    assert fakepg.plaintext_startups == 0
    assert_no_secrets(b, [SECRET, SESSION, tok])


def test_token_without_session_token_and_global_region(bouncer_factory, certs, fakepg, tmp_path):
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET)
    b = make(bouncer_factory, certs, fakepg, env, settings={"aws_region": "ap-southeast-2"}, user="iam_user",
             entry_extra="")
    assert query_one(b) == 1
    user, tok = fakepg.logins[0]
    assert user == "iam_user" and "X-Amz-Security-Token" not in tok
    expect_botocore(tok, AKID, SECRET, None, fakepg.port, user="iam_user", region="ap-southeast-2")
    assert_no_secrets(b, [SECRET, tok])


def test_no_region_fails_clearly(bouncer_factory, certs, fakepg, tmp_path):
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET)
    b = make(bouncer_factory, certs, fakepg, env, entry_extra="")
    code, msg = login_error(b, dbname="iamdb")
    assert code == "08006" and "no AWS region" in msg, (code, msg)
    assert fakepg.logins == []
    # AWS_REGION is the last resort
    b.stop()
    b.env["AWS_REGION"] = "us-east-2"
    b.start()
    assert query_one(b) == 1
    expect_botocore(fakepg.logins[0][1], AKID, SECRET, None, fakepg.port, region="us-east-2")


# ---- b) the credential chain ----

def write_credentials(path, profiles):
    with open(path, "w") as f:
        for name, (ak, sk, st) in profiles.items():
            f.write("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n" % (name, ak, sk))
            if st:
                f.write("aws_session_token = %s\n" % st)


def test_shared_credentials_file_and_reload(bouncer_factory, certs, fakepg, tmp_path):
    credfile = tmp_path / "credentials"
    long_token = "FILE/SESSION+" + "x" * 900  # longer than inih's line limit
    write_credentials(credfile, {"default": ("AKIADEFAULT", "default/secret", None),
                                 "app": ("AKIAFILEAPP", "file/app+secret", long_token)})
    env = clean_env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(credfile), AWS_PROFILE="app")
    b = make(bouncer_factory, certs, fakepg, env)
    assert query_one(b) == 1
    tok = fakepg.logins[0][1]
    assert token_params(tok)["X-Amz-Credential"].startswith("AKIAFILEAPP/")
    expect_botocore(tok, "AKIAFILEAPP", "file/app+secret", long_token, fakepg.port)
    # the file changes: read again on RELOAD, and the token follows
    write_credentials(credfile, {"app": ("AKIAFILEAPP2", "file/app2", None)})
    wait_for(lambda: b.admin("SHOW SERVERS") == [])
    b.reload()
    assert query_one(b) == 1
    tok2 = fakepg.logins[-1][1]
    expect_botocore(tok2, "AKIAFILEAPP2", "file/app2", None, fakepg.port)
    assert_no_secrets(b, ["default/secret", "file/app+secret", long_token, "file/app2", tok, tok2])


def test_environment_wins_over_the_file(bouncer_factory, certs, fakepg, tmp_path):
    credfile = tmp_path / "home-credentials"
    write_credentials(credfile, {"default": ("AKIAFROMFILE", "file/secret", None)})
    env = clean_env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(credfile), AWS_ACCESS_KEY_ID=AKID,
                    AWS_SECRET_ACCESS_KEY=SECRET)
    b = make(bouncer_factory, certs, fakepg, env)
    assert query_one(b) == 1
    expect_botocore(fakepg.logins[0][1], AKID, SECRET, None, fakepg.port)


def container_creds(n=1, lifetime=3600):
    return {"AccessKeyId": "ASIACONTAINER%d" % n, "SecretAccessKey": "container/secret+%d" % n,
            "Token": "container-session/%d+%s" % (n, "C" * 200), "Expiration": iso(time.time() + lifetime)}


def test_container_credentials_pod_identity(bouncer_factory, certs, fakepg, tmp_path):
    auth = "eks-pod-identity-token-%d" % os.getpid()
    authfile = tmp_path / "eks-token"
    authfile.write_text(auth + "\n")
    seen = []
    doc = container_creds()

    def handle(method, path, headers):
        seen.append((method, path, headers.get("Authorization")))
        if path != "/v1/credentials" or headers.get("Authorization") != auth:
            return 401, '{"message": "bad token"}'
        return 200, json.dumps(doc)

    ep = FakeHTTP(handle)
    try:
        env = clean_env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=ep.url + "/v1/credentials",
                        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(authfile),
                        AWS_CONTAINER_AUTHORIZATION_TOKEN="the-file-wins")
        b = make(bouncer_factory, certs, fakepg, env, settings={"audit_log": str(tmp_path / "audit.log")})
        assert query_one(b) == 1
        assert seen == [("GET", "/v1/credentials", auth)]
        tok = fakepg.logins[0][1]
        expect_botocore(tok, doc["AccessKeyId"], doc["SecretAccessKey"], doc["Token"], fakepg.port)
        assert b.log_contains("AWS credentials loaded from the container credentials endpoint") == 1
        assert_no_secrets(b, [auth, doc["SecretAccessKey"], doc["Token"], tok],
                          extra_files=[str(tmp_path / "audit.log")])
    finally:
        ep.close()


def metric(b, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % b.metrics_port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_imds_v2_and_refresh_before_expiry(bouncer_factory, certs, fakepg, tmp_path):
    imds = FakeIMDS(lifetime=20)
    try:
        env = clean_env(tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url + "/")
        env.pop("AWS_EC2_METADATA_DISABLED")
        env["AWS_EC2_METADATA_DISABLED"] = None
        mport = free_port()
        b = make(bouncer_factory, certs, fakepg, env, settings={"metrics_listen": "127.0.0.1:%d" % mport})
        b.metrics_port = mport
        assert query_one(b) == 1
        assert len(imds.fetches) == 1 and imds.puts >= 1 and imds.rejected == 0
        t1, ak1, exp1, doc1 = imds.fetches[0]
        tok1 = fakepg.logins[0][1]
        assert token_params(tok1)["X-Amz-Credential"].startswith(ak1 + "/")
        expect_botocore(tok1, ak1, doc1["SecretAccessKey"], doc1["Token"], fakepg.port)
        # renewed at half their 20 s lifetime, before they expire, without a login asking
        assert wait_for(lambda: len(imds.fetches) >= 2, timeout=exp1 - time.time() - 1)
        t2, ak2, exp2, doc2 = imds.fetches[1]
        assert t2 < exp1 - 2 and t2 - t1 >= 8
        assert imds.rejected == 0
        wait_for(lambda: b.admin("SHOW SERVERS") == [])
        assert query_one(b) == 1
        tok2 = fakepg.logins[-1][1]
        assert token_params(tok2)["X-Amz-Credential"].startswith(ak2 + "/")
        expect_botocore(tok2, ak2, doc2["SecretAccessKey"], doc2["Token"], fakepg.port)
        assert metric(b, "pgtenant_aws_credential_refreshes_total") >= 2
        assert metric(b, "pgtenant_aws_credential_failures_total") == 0
        assert_no_secrets(b, [imds.session, doc1["SecretAccessKey"], doc1["Token"], doc2["SecretAccessKey"],
                              doc2["Token"], tok1, tok2])
    finally:
        imds.close()


def test_failed_renewal_keeps_the_old_credentials(bouncer_factory, certs, fakepg, tmp_path):
    imds = FakeIMDS(lifetime=20, fail=(2, 3))
    try:
        env = clean_env(tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url, AWS_EC2_METADATA_DISABLED=None)
        mport = free_port()
        b = make(bouncer_factory, certs, fakepg, env, settings={"metrics_listen": "127.0.0.1:%d" % mport})
        b.metrics_port = mport
        assert query_one(b) == 1
        t1, ak1, exp1, _ = imds.fetches[0]
        # the renewal at half the lifetime fails: the old credentials still sign
        assert wait_for(lambda: len(imds.failed) >= 1, timeout=15)
        wait_for(lambda: b.admin("SHOW SERVERS") == [])
        assert query_one(b) == 1
        assert token_params(fakepg.logins[-1][1])["X-Amz-Credential"].startswith(ak1 + "/")
        assert b.log_contains("could not be renewed: EC2 metadata service: HTTP status 500") >= 1
        # retried with backoff (1 s, then 2 s), and renewed before they expire
        assert wait_for(lambda: len(imds.fetches) >= 2, timeout=exp1 - time.time() - 1)
        assert len(imds.failed) == 2 and imds.failed[1] - imds.failed[0] >= 0.8
        assert imds.fetches[1][0] - imds.failed[1] >= 1.6
        assert metric(b, "pgtenant_aws_credential_failures_total") == 2
        wait_for(lambda: b.admin("SHOW SERVERS") == [])
        assert query_one(b) == 1
        assert token_params(fakepg.logins[-1][1])["X-Amz-Credential"].startswith(imds.fetches[1][1] + "/")
    finally:
        imds.close()


def test_imds_without_token_is_refused_by_the_fake(tmp_path):
    """The fake IMDS really requires IMDSv2 (so the test above shows pgtenant does the PUT)."""
    imds = FakeIMDS()
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(imds.url + "/latest/meta-data/iam/security-credentials/", timeout=5)
        assert e.value.code == 401
    finally:
        imds.close()


# ---- c) slow and failing endpoints ----

def test_slow_endpoint_stalls_no_other_pool(bouncer_factory, certs, fakepg, tmp_path):
    # accepts connections and never answers: the fetch times out (2 s)
    slow = socket.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(16)
    held = []
    stop = threading.Event()

    def hold():
        slow.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(slow.accept()[0])
            except OSError:
                pass

    threading.Thread(target=hold, daemon=True).start()
    try:
        env = clean_env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:%d/creds"
                        % slow.getsockname()[1])
        b = make(bouncer_factory, certs, fakepg, env)
        result = {}

        def iam_login():
            t0 = time.time()
            result["err"] = login_error(b, dbname="iamdb")
            result["t"] = time.time() - t0

        th = threading.Thread(target=iam_login)
        th.start()
        assert wait_for(lambda: held, timeout=5), "pgtenant never asked the endpoint"
        # meanwhile the password entry answers at once, again and again
        with b.connect() as c:
            for _ in range(10):
                t0 = time.time()
                assert c.execute("select 1").fetchone()[0] == 1
                assert time.time() - t0 < 0.5
        assert th.is_alive(), "the IAM login did not wait for the endpoint"
        th.join(15)
        code, msg = result["err"]
        assert code == "08006" and "no AWS credentials" in msg, result
        assert result["t"] >= 1.5
        assert b.log_contains(r"server connection failed: no AWS credentials: container credentials endpoint: "
                              r"no answer") >= 1
        assert fakepg.logins == []
    finally:
        stop.set()
        slow.close()
        for s in held:
            s.close()


def test_failing_endpoint_gives_08006(bouncer_factory, certs, fakepg, tmp_path):
    calls = []

    def handle(method, path, headers):
        calls.append(path)
        return 500, "oops"

    ep = FakeHTTP(handle)
    try:
        env = clean_env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=ep.url + "/creds",
                        AWS_CONTAINER_AUTHORIZATION_TOKEN="container-auth-secret-xyz")
        mport = free_port()
        b = make(bouncer_factory, certs, fakepg, env, settings={"metrics_listen": "127.0.0.1:%d" % mport})
        b.metrics_port = mport
        code, msg = login_error(b, dbname="iamdb")
        assert code == "08006", (code, msg)
        assert "no AWS credentials: container credentials endpoint: HTTP status 500" in msg
        assert b.log_contains(r"server connection failed: no AWS credentials: container credentials "
                              r"endpoint: HTTP status 500") >= 1
        assert calls and fakepg.logins == []
        assert metric(b, "pgtenant_aws_credential_failures_total") >= 1
        # the password entry is not affected
        with b.connect() as c:
            assert c.execute("select 1").fetchone()[0] == 1
        assert_no_secrets(b, ["container-auth-secret-xyz"])
    finally:
        ep.close()


def test_no_credentials_at_all(bouncer_factory, certs, fakepg, tmp_path):
    b = make(bouncer_factory, certs, fakepg, clean_env(tmp_path))
    code, msg = login_error(b, dbname="iamdb")
    assert code == "08006" and "no AWS credentials" in msg and "AWS_EC2_METADATA_DISABLED" in msg, msg
    assert b.log_contains("server connection failed: no AWS credentials: ") >= 1


def test_server_refusing_the_token(bouncer_factory, certs, tmp_path):
    fake = FakePG(certs, accept=False)
    try:
        env = clean_env(tmp_path, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET)
        b = make(bouncer_factory, certs, fake, env)
        code, msg = login_error(b, dbname="iamdb")
        assert code == "08006" and "PAM authentication failed" in msg, (code, msg)
        assert len(fake.logins) == 1
        assert_no_secrets(b, [SECRET, fake.logins[0][1]])
    finally:
        fake.close()


# ---- d) configuration ----

@pytest.mark.parametrize("where,mode", [("entry", "disable"), ("entry", "prefer"), ("global", "prefer"),
                                        ("global", "allow")])
def test_check_refuses_iam_without_tls(tmp_path, where, mode):
    ini = tmp_path / "pgtenant.ini"
    entry = "appdb = host=db.cluster-x.eu-west-1.rds.amazonaws.com dbname=appdb user=app server_auth=iam"
    if where == "entry":
        entry += " sslmode=" + mode
    lines = ["[databases]", entry, "[pgtenant]", "listen_port = %d" % free_port(), "auth_type = trust"]
    if where == "global":
        lines.append("server_tls_sslmode = " + mode)
    ini.write_text("\n".join(lines) + "\n")
    r = subprocess.run([PGTENANT_BIN, "--check", str(ini)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "%s:2:" % ini in r.stderr and "server_auth iam needs TLS" in r.stderr and mode in r.stderr, r.stderr


# ---- e) nothing secret in the logs, at the highest verbosity ----

def test_no_secret_in_verbose_logs(bouncer_factory, certs, fakepg, tmp_path):
    audit = str(tmp_path / "audit.log")
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SESSION)
    b = make(bouncer_factory, certs, fakepg, env, settings={"audit_log": audit}, start=False)
    b.start("-v", "-v")
    for _ in range(3):
        assert query_one(b) == 1
        wait_for(lambda: b.admin("SHOW SERVERS") == [])
    code, _ = login_error(b, dbname="iamdb", password="wrong")
    assert code == "28P01"
    b.stop()
    log = b.log()
    assert "sending an IAM token" in log, "not at the highest verbosity"
    assert os.path.getsize(audit) > 0
    toks = [t for _, t in fakepg.logins]
    assert len(toks) == 3
    assert_no_secrets(b, [SECRET, SESSION] + toks, extra_files=[audit])
    # not even the signature alone
    for t in toks:
        assert token_params(t)["X-Amz-Signature"] not in log
