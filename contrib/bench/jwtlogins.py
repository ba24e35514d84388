#!/usr/bin/python3
"""
Logins per second with JWTs (issue 12): pgbench -C -S (a new connection,
login and one SELECT per transaction) through

  pgtenant, auth_type = jwt, an RS256 token (RSA 2048) as the password
  pgtenant, auth_type = jwt, an ES256 token (P-256)
  pgtenant, auth_type = scram-sha-256
  PgBouncer, auth_type = scram-sha-256

interleaved, --runs times; prints the median rate, its spread and the
pooler's CPU per login.  Plaintext TCP (jwt_allow_plaintext = yes), so that
what is measured is the authentication, not TLS (bench.py --tls measures
handshakes).  Server connections are pooled in both poolers, so a login
costs the pooler, not PostgreSQL.

  contrib/bench/jwtlogins.py [--runs 3] [--connections 3000] [--clients 8]
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

import bench  # noqa: E402
from conftest import Postgres, free_port, wait_port  # noqa: E402


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def openssl(*a):
    subprocess.run(["openssl"] + list(a), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sign(keyfile, alg, claims):
    """A compact JWS signed with the openssl CLI (no Python JWT library needed)."""
    header = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64u(json.dumps(claims).encode())
    data = (header + "." + payload).encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", keyfile], input=data, capture_output=True,
                         check=True).stdout
    if alg == "ES256":
        # DER ECDSA-Sig-Value to r||s
        der = sig
        i = 2 if der[1] < 0x80 else 3
        rl = der[i + 1]
        r = der[i + 2:i + 2 + rl]
        j = i + 2 + rl
        s = der[j + 2:j + 2 + der[j + 1]]
        sig = r.lstrip(b"\0").rjust(32, b"\0") + s.lstrip(b"\0").rjust(32, b"\0")
    return header + "." + payload + "." + b64u(sig)


def start_pgtenant(d, pg, binary, auth):
    port = free_port()
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "userlist.txt"), "w") as f:
        f.write('"app" "apppass"\n')
    ini = os.path.join(d, "pgtenant.ini")
    with open(ini, "w") as f:
        f.write("[databases]\nappdb = host=127.0.0.1 port=%d dbname=appdb user=app password=apppass\n"
                "[pgtenant]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
                "auth_file = %s/userlist.txt\npool_mode = transaction\ndefault_pool_size = 8\n"
                "max_client_conn = 20000\ntenant_required = no\nserver_tls_sslmode = disable\n"
                "auth_failure_delay = 0\nunknown_tenant = allow\n" % (pg.port, port, d))
        if auth == "jwt":
            f.write("auth_type = jwt\njwt_key_file = %s/keys.pem\njwt_algorithms = RS256, ES256\n"
                    "jwt_user_claim =\njwt_allow_plaintext = yes\n" % d)
        else:
            f.write("auth_type = scram-sha-256\n")
    return bench.Pooler("pgtenant-" + auth, [binary, "-q", ini], port)


def rate(p, password, clients, total):
    env = dict(os.environ, PGPASSWORD=password, PGSSLMODE="disable")
    c0 = bench.cpu_seconds(p.pid)
    t0 = time.time()
    r = subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(p.port), "-U", "app", "-n", "-C", "-S",
                        "-c", str(clients), "-j", "2", "-t", str(total // clients), "appdb"],
                       capture_output=True, text=True, env=env, timeout=600)
    wall = time.time() - t0
    if r.returncode != 0 or "number of failed transactions: 0" not in r.stdout:
        raise RuntimeError("%s: pgbench failed: %s" % (p.name, (r.stderr or r.stdout)[-300:]))
    n = (total // clients) * clients
    return n / wall, (bench.cpu_seconds(p.pid) - c0) / n * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "pgtenant"))
    ap.add_argument("--pgbouncer", default=bench.DEFAULT_PGBOUNCER)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="pgt-jwtbench-")
    os.chmod(work, 0o755)
    pg = Postgres()
    poolers = []
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", pg.sockdir, "-p", str(pg.port), "-U", "app", "appdb"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        d = os.path.join(work, "pgtenant-jwt")
        os.makedirs(d)
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", d + "/rsa.key")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", d + "/ec.key")
        with open(d + "/keys.pem", "w") as out:
            for k in ("rsa", "ec"):
                out.write(subprocess.run(["openssl", "pkey", "-in", "%s/%s.key" % (d, k), "-pubout"],
                                         capture_output=True, text=True, check=True).stdout)
        claims = {"exp": int(time.time()) + 24 * 3600, "sub": "app", "custom:tenant_id": "acme"}
        tokens = {"RS256": sign(d + "/rsa.key", "RS256", claims), "ES256": sign(d + "/ec.key", "ES256", claims)}
        jwtp = start_pgtenant(d, pg, args.binary, "jwt")
        scram = start_pgtenant(os.path.join(work, "pgtenant-scram"), pg, args.binary, "scram")
        pgb = bench.start_pgbouncer(work, pg, 8, exe=args.pgbouncer, name="pgbouncer")
        poolers = [jwtp, scram, pgb]
        cells = [("pgtenant JWT RS256", jwtp, tokens["RS256"]), ("pgtenant JWT ES256", jwtp, tokens["ES256"]),
                 ("pgtenant SCRAM", scram, "apppass"),
                 ("PgBouncer %s SCRAM" % bench.pgbouncer_version(args.pgbouncer)[0], pgb, "apppass")]
        for name, p, pw in cells:  # warm-up: pools filled, SCRAM keys cached
            rate(p, pw, args.clients, 200)
        results = {name: [] for name, _, _ in cells}
        for i in range(args.runs):
            for name, p, pw in cells[i % len(cells):] + cells[:i % len(cells)]:
                results[name].append(rate(p, pw, args.clients, args.connections))
        print("logins per second (pgbench -C -S, %d clients, %d connections per run, %d runs, plaintext TCP)"
              % (args.clients, args.connections, args.runs))
        print("%-28s | %8s | %13s | %11s | %13s" % ("", "logins/s", "spread", "us CPU/login", "CPU spread"))
        print("-" * 84)
        for name, _, _ in cells:
            r = bench.spread([x[0] for x in results[name]])
            c = bench.spread([x[1] for x in results[name]])
            print("%-28s | %8.0f | %6.0f-%-6.0f | %11.0f | %6.0f-%-6.0f" % (name, r[0], r[1], r[2], c[0], c[1], c[2]))
    finally:
        for p in poolers:
            p.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
