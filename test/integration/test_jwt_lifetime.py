"""
JWT logins over time: a client whose token expires is refused at its next
transaction boundary (jwt_enforce_expiry), not in the middle of a
transaction; and a key file replaced the way a mounted secret is (a new
file renamed over the old one) is picked up without a RELOAD, while a
broken one keeps the previous keys.
"""
import os
import subprocess
import time

import jwt
import psycopg
import pytest

from conftest import login_error


def keypair(d, name):
    key = os.path.join(d, name + ".key")
    pub = os.path.join(d, name + ".pub")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True)
    with open(key) as f:
        private = f.read()
    with open(pub) as f:
        public = f.read()
    return private, public


def token(private, tenant="acme", ttl=60, **claims):
    body = {"exp": int(time.time()) + ttl, "custom:tenant_id": tenant}
    body.update(claims)
    return jwt.encode(body, private, algorithm="ES256")


def jwt_bouncer(bouncer_factory, tmp_path, public, **settings):
    keyfile = str(tmp_path / "keys.pem")
    with open(keyfile, "w") as f:
        f.write(public)
    s = {"auth_type": "jwt", "jwt_key_file": keyfile, "jwt_algorithms": "ES256", "jwt_user_claim": "",
         "jwt_allow_plaintext": "yes", "unknown_tenant": "allow", "auth_failure_delay": "0"}
    s.update(settings)
    return bouncer_factory(settings=s), keyfile


def test_token_expiry_ends_the_session_at_a_transaction_boundary(bouncer_factory, tmp_path):
    private, public = keypair(str(tmp_path), "a")
    b, _ = jwt_bouncer(bouncer_factory, tmp_path, public, jwt_leeway="0")
    tok = token(private, ttl=2)
    conn = psycopg.connect(b.dsn(password=tok), autocommit=True)
    assert conn.execute("select 1").fetchone()[0] == 1
    # a transaction that runs past the expiry finishes
    with conn.transaction():
        conn.execute("select 2")
        time.sleep(3.5)
        assert conn.execute("select 3").fetchone()[0] == 3
    # the next one does not start
    with pytest.raises(psycopg.OperationalError, match="invalid token: expired"):
        conn.execute("select 4")
    conn.close()
    # with jwt_enforce_expiry = no the token is checked at login only
    b2, _ = jwt_bouncer(bouncer_factory, tmp_path, public, jwt_leeway="0", jwt_enforce_expiry="no")
    with psycopg.connect(b2.dsn(password=token(private, ttl=2)), autocommit=True) as c2:
        time.sleep(2.5)
        assert c2.execute("select 5").fetchone()[0] == 5
    assert "invalid token: expired" in login_error(b2, password=tok)[1]


def test_key_file_replaced_without_reload(bouncer_factory, tmp_path):
    old_private, old_public = keypair(str(tmp_path), "old")
    new_private, new_public = keypair(str(tmp_path), "new")
    b, keyfile = jwt_bouncer(bouncer_factory, tmp_path, old_public)
    assert login_error(b, password=token(old_private)) == (None, None)
    code, msg = login_error(b, password=token(new_private))
    assert code == "28P01" and "invalid token: bad signature" in msg, (code, msg)
    # a mounted secret changes by a rename of a new file over the old one
    tmpfile = keyfile + ".new"
    with open(tmpfile, "w") as f:
        f.write(new_public)
    os.rename(tmpfile, keyfile)
    deadline = time.time() + 5
    while login_error(b, password=token(new_private)) != (None, None):
        assert time.time() < deadline, "the new key was not picked up"
        time.sleep(0.2)
    assert "invalid token: bad signature" in login_error(b, password=token(old_private))[1]
    assert b.log_contains("JWT keys re-read: jwt_key_file changed") >= 1
    # a broken file keeps the keys in use
    with open(tmpfile, "w") as f:
        f.write("not a key\n")
    os.rename(tmpfile, keyfile)
    deadline = time.time() + 5
    while not b.log_contains("keeping the previous JWT keys"):
        assert time.time() < deadline, b.log()[-2000:]
        time.sleep(0.2)
    assert login_error(b, password=token(new_private)) == (None, None)
