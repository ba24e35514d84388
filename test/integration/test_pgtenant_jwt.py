"""
contrib/pgtenant-jwt, the DBA's token signer: its tokens (RS256, ES256,
EdDSA, HS256) log in through pgtenant and land in the tenant they name; an
expired one (--ttl -60) is refused as expired.
"""
import os
import subprocess

import psycopg

from conftest import login_error

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "contrib", "pgtenant-jwt")


def test_pgtenant_jwt_tokens_log_in(bouncer_factory, tmp_path):
    d = str(tmp_path)
    gen = {"rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
           "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], "ed": ["-algorithm", "ed25519"]}
    pubs = ""
    for name, a in gen.items():
        subprocess.run(["openssl", "genpkey"] + a + ["-out", "%s/%s.key" % (d, name)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pubs += subprocess.run(["openssl", "pkey", "-in", "%s/%s.key" % (d, name), "-pubout"], check=True,
                               capture_output=True, text=True).stdout
    with open(d + "/keys.pem", "w") as f:
        f.write(pubs)
    with open(d + "/secret", "w") as f:
        f.write("an HMAC secret of more than 32 bytes\n")
    b = bouncer_factory(settings={"auth_type": "jwt", "jwt_key_file": d + "/keys.pem", "jwt_secret_file": d + "/secret",
                                  "jwt_algorithms": "RS256, ES256, EdDSA, HS256", "jwt_user_claim": "sub",
                                  "jwt_allow_plaintext": "yes", "unknown_tenant": "allow", "auth_failure_delay": "0"})

    def token(key, alg, *extra):
        return subprocess.run([TOOL, "--key", key, "--alg", alg, "--sub", "app", "--tenant", "acme"] + list(extra),
                              check=True, capture_output=True, text=True).stdout.strip()

    for key, alg in (("rsa.key", "RS256"), ("ec.key", "ES256"), ("ed.key", "EdDSA"), ("secret", "HS256")):
        with psycopg.connect(b.dsn(password=token(d + "/" + key, alg)), autocommit=True) as conn:
            assert conn.execute("SHOW search_path").fetchone()[0] == '"tenant_acme", public', alg
    code, msg = login_error(b, password=token(d + "/ec.key", "ES256", "--ttl", "-60"))
    assert code == "28P01" and "invalid token: expired" in msg, (code, msg)
