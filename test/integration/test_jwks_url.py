"""
jwt_jwks_url: a local HTTPS JWKS server on loopback, with a certificate
from a CA the suite makes (given to pgtenant through SSL_CERT_FILE, as a
deployment would point OpenSSL at a private CA).  Keys rotate without a
restart: a token with a new kid makes pgtenant fetch the set again and its
login waits for that fetch; when the server is down, known keys keep
working and the failure is logged and counted; a server whose certificate
does not verify gives no keys.
"""
import base64
import http.server
import json
import os
import ssl
import subprocess
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from conftest import login_error
from test_metrics import parse, scrape
from tlscerts import CertMaker
from conftest import free_port


def b64u(n, length):
    return base64.urlsafe_b64encode(n.to_bytes(length, "big")).rstrip(b"=").decode()


def ec_key(d, name):
    path = os.path.join(d, name + ".key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(path, "rb") as f:
        private = serialization.load_pem_private_key(f.read(), None)
    nums = private.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64u(nums.x, 32), "y": b64u(nums.y, 32), "kid": name, "alg": "ES256",
           "use": "sig"}
    return private, jwk


class JWKSServer:
    """HTTPS on 127.0.0.1 serving self.doc at /jwks.json; counts requests."""

    def __init__(self, cert, key):
        self.doc = {"keys": []}
        self.docs = {}  # path -> document, beside /jwks.json
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                doc = server.docs.get(self.path, server.doc)
                body = json.dumps(doc).encode()
                self.send_response(200 if self.path == "/jwks.json" or self.path in server.docs else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_env(tmp_path):
    m = CertMaker(tmp_path / "certs")
    os.makedirs(m.dir, exist_ok=True)
    ca = m.ca("ca", "jwks test CA")
    srv = m.issue("jwks", "localhost", ca, ("DNS:localhost", "IP:127.0.0.1"))
    server = JWKSServer(srv.cert, srv.key)
    yield ca, server
    try:
        server.stop()
    except Exception:  # noqa: BLE001 - stopped by the test already
        pass


def start(bouncer_factory, ca_file, url, metrics_port, extra=None, tenants=None):
    saved = os.environ.get("SSL_CERT_FILE")
    if ca_file:
        os.environ["SSL_CERT_FILE"] = ca_file
    try:
        settings = {"auth_type": "jwt", "jwt_jwks_url": url, "jwt_algorithms": "ES256",
                    "jwt_user_claim": "", "jwt_allow_plaintext": "yes", "unknown_tenant": "allow",
                    "auth_failure_delay": "0", "metrics_listen": "127.0.0.1:%d" % metrics_port}
        settings.update(extra or {})
        b = bouncer_factory(settings=settings, tenants=tenants)
    finally:
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved
    b.metrics_port = metrics_port
    return b


def tok(private, kid, tenant="acme"):
    return jwt.encode({"exp": int(time.time()) + 60, "custom:tenant_id": tenant}, private, algorithm="ES256",
                      headers={"kid": kid})


def metric(b, name):
    return parse(scrape(b)).get((name, ()), 0)


def test_jwks_url_rotation_and_outage(bouncer_factory, jwks_env, tmp_path):
    ca, server = jwks_env
    a_priv, a_jwk = ec_key(str(tmp_path), "a")
    b_priv, b_jwk = ec_key(str(tmp_path), "b")
    server.doc = {"keys": [a_jwk]}
    b = start(bouncer_factory, ca.cert, "https://localhost:%d/jwks.json" % server.port, free_port())
    t0 = time.time()
    deadline = t0 + 5
    while login_error(b, password=tok(a_priv, "a")) != (None, None):
        assert time.time() < deadline, b.log()[-2000:]
        time.sleep(0.1)
    assert metric(b, "pgtenant_jwks_fetches_total") == 1
    # the issuer rotates: kid b appears in the set; pgtenant learns of it from
    # the first token that names it (fetches for unknown kids: at most one per 10 s)
    server.doc = {"keys": [a_jwk, b_jwk]}
    time.sleep(max(0, t0 + 10.5 - time.time()))
    before = server.requests
    assert login_error(b, password=tok(b_priv, "b", tenant="globex")) == (None, None)
    assert server.requests == before + 1
    assert metric(b, "pgtenant_jwks_fetches_total") == 2
    # a kid nobody has, right after a fetch: refused at once, no fetch
    code, msg = login_error(b, password=tok(b_priv, "zzz"))
    assert code == "28P01" and "invalid token: unknown key" in msg, (code, msg)
    assert server.requests == before + 1
    # the server goes away: known keys keep working, the failed fetch is logged and counted
    server.stop()
    time.sleep(10.5)
    code, msg = login_error(b, password=tok(b_priv, "yyy"))
    assert code == "28P01" and "invalid token: unknown key" in msg, (code, msg)
    assert metric(b, "pgtenant_jwks_fetch_failures_total") == 1
    assert b.log_contains("jwt_jwks_url .*keeping the keys in use") == 1
    assert login_error(b, password=tok(a_priv, "a")) == (None, None)
    assert login_error(b, password=tok(b_priv, "b", tenant="globex")) == (None, None)


def test_jwks_url_certificate_must_verify(bouncer_factory, jwks_env, tmp_path):
    """Without the CA that signed the JWKS server's certificate, nothing is
    fetched and no token verifies."""
    ca, server = jwks_env
    a_priv, a_jwk = ec_key(str(tmp_path), "a")
    server.doc = {"keys": [a_jwk]}
    empty_ca = str(tmp_path / "empty.pem")
    open(empty_ca, "w").close()
    b = start(bouncer_factory, empty_ca, "https://localhost:%d/jwks.json" % server.port, free_port())
    deadline = time.time() + 5
    while metric(b, "pgtenant_jwks_fetch_failures_total") < 1:
        assert time.time() < deadline, b.log()[-2000:]
        time.sleep(0.1)
    code, msg = login_error(b, password=tok(a_priv, "a"))
    assert code == "28P01" and "invalid token: unknown key" in msg, (code, msg)
    assert metric(b, "pgtenant_jwks_fetches_total") == 0


def test_one_key_set_per_issuer_and_keys_bound_to_their_issuer(bouncer_factory, jwks_env, tmp_path):
    """One jwt_jwks_url per tenant user pool, each under its issuer (as
    Cognito's are).  A pool's keys sign for its own issuer only: whoever
    holds pool A's key cannot mint a token that claims pool B's issuer (and
    with it tenant B), even with tenant B's name and B's issuer in it."""
    ca, server = jwks_env
    a_priv, a_jwk = ec_key(str(tmp_path), "pool-a-key")
    b_priv, b_jwk = ec_key(str(tmp_path), "pool-b-key")
    base = "https://localhost:%d" % server.port
    iss_a, iss_b = base + "/pool-a", base + "/pool-b"
    server.docs = {"/pool-a/.well-known/jwks.json": {"keys": [a_jwk]},
                   "/pool-b/.well-known/jwks.json": {"keys": [b_jwk]}}
    b = start(bouncer_factory, ca.cert,
              "%s/.well-known/jwks.json, %s/.well-known/jwks.json" % (iss_a, iss_b), free_port(),
              extra={"jwt_issuer": "%s, %s" % (iss_a, iss_b), "unknown_tenant": "reject"},
              tenants={"acme": "jwt_issuer=%s" % iss_a, "globex": "jwt_issuer=%s" % iss_b})

    def token(private, kid, iss, tenant):
        return jwt.encode({"exp": int(time.time()) + 60, "iss": iss, "custom:tenant_id": tenant}, private,
                          algorithm="ES256", headers={"kid": kid})

    deadline = time.time() + 5
    while login_error(b, password=token(a_priv, "pool-a-key", iss_a, "acme")) != (None, None):
        assert time.time() < deadline, b.log()[-2000:]
        time.sleep(0.1)
    deadline = time.time() + 5
    while login_error(b, password=token(b_priv, "pool-b-key", iss_b, "globex")) != (None, None):
        assert time.time() < deadline, b.log()[-2000:]
        time.sleep(0.1)
    assert metric(b, "pgtenant_jwks_fetches_total") == 2
    assert b.log_contains("key set loaded for issuer %s" % iss_a) == 1
    # pool A's key, B's issuer and tenant: refused, although every claim
    # taken alone is one pgtenant accepts
    code, msg = login_error(b, password=token(a_priv, "pool-a-key", iss_b, "globex"))
    assert code == "28P01" and "invalid token: key of another issuer" in msg, (code, msg)
    # ... also without a kid (every key is tried, none of another issuer)
    bare = jwt.encode({"exp": int(time.time()) + 60, "iss": iss_b, "custom:tenant_id": "globex"}, a_priv,
                      algorithm="ES256")
    code, msg = login_error(b, password=bare)
    assert code == "28P01" and "invalid token: bad signature" in msg, (code, msg)
    # pool A's own token naming tenant B: the tenant's issuer binding
    code, msg = login_error(b, password=token(a_priv, "pool-a-key", iss_a, "globex"))
    assert code == "28P01" and "issuer not allowed" in msg, (code, msg)
    m = parse(scrape(b))
    assert m.get(("pgtenant_jwt_refusals_total", (("jwt_reason", "key_of_another_issuer"),)), 0) == 1
