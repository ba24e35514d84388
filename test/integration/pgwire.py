"""A tiny raw PostgreSQL wire client for tests that need to send what no
driver sends: pipelined simple queries, garbage, lying lengths, SSLRequest,
protocol 3.1 with _pq_ options, abrupt disconnects."""
import base64
import hashlib
import hmac
import os
import socket
import struct


def connect(b, timeout=10):
    s = socket.create_connection(("127.0.0.1", b.port), timeout=timeout)
    return s


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def recv_msg(s):
    hdr = recv_exact(s, 5)
    (ln,) = struct.unpack("!I", hdr[1:5])
    return hdr[:1], recv_exact(s, ln - 4)


def msg(t, body):
    return t + struct.pack("!I", 4 + len(body)) + body


def startup_packet(params, version=196608):
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!II", 8 + len(body), version) + body


def error_fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def scram_login(s, password):
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=,r=" + nonce
    first = ("n,," + first_bare).encode()
    s.sendall(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
    t, body = recv_msg(s)
    assert t == b"R" and struct.unpack("!I", body[:4])[0] == 11, (t, body)
    server_first = body[4:].decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = "c=biws,r=" + attrs["r"]
    auth_msg = ",".join([first_bare, server_first, without_proof]).encode()
    sig = hmac.new(stored, auth_msg, "sha256").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
    s.sendall(msg(b"p", (without_proof + ",p=" + proof).encode()))
    t, body = recv_msg(s)
    assert t == b"R" and struct.unpack("!I", body[:4])[0] == 12, (t, body)


def login(b, user="app", dbname="appdb", extra=None, version=196608):
    """Log in (SCRAM or trust); return (socket, messages received up to ReadyForQuery)."""
    s = connect(b)
    params = {"user": user, "database": dbname}
    params.update(extra or {})
    s.sendall(startup_packet(params, version))
    seen = []
    while True:
        t, body = recv_msg(s)
        seen.append((t, body))
        if t == b"R":
            code = struct.unpack("!I", body[:4])[0]
            if code == 10:
                scram_login(s, b.users[user])
            elif code != 0:
                raise AssertionError("unexpected auth request %d" % code)
        elif t == b"E":
            raise AssertionError("login refused: %r" % error_fields(body))
        elif t == b"Z":
            return s, seen


def query(s, sql):
    s.sendall(msg(b"Q", sql.encode() + b"\0"))
    return read_until_ready(s, 1)


def read_until_ready(s, n=1):
    out = []
    while n:
        t, body = recv_msg(s)
        out.append((t, body))
        if t == b"Z":
            n -= 1
    return out


def data_rows(msgs):
    """First column of every DataRow, as text."""
    rows = []
    for t, body in msgs:
        if t == b"D":
            (ln,) = struct.unpack("!i", body[2:6])
            rows.append(body[6:6 + ln].decode() if ln >= 0 else None)
    return rows


def result(msgs):
    """(columns as [(name, type oid)], rows as lists of text or None) of a
    simple-query answer; raises on an ErrorResponse."""
    cols, rows = [], []
    for t, body in msgs:
        if t == b"E":
            raise AssertionError("error: %r" % error_fields(body))
        if t == b"T":
            (n,) = struct.unpack("!H", body[:2])
            pos = 2
            for _ in range(n):
                end = body.index(b"\0", pos)
                name = body[pos:end].decode()
                pos = end + 1
                _table, _col, oid, _len, _mod, _fmt = struct.unpack("!IHIhih", body[pos:pos + 18])
                pos += 18
                cols.append((name, oid))
        elif t == b"D":
            (n,) = struct.unpack("!H", body[:2])
            pos, row = 2, []
            for _ in range(n):
                (ln,) = struct.unpack("!i", body[pos:pos + 4])
                pos += 4
                row.append(body[pos:pos + ln].decode() if ln >= 0 else None)
                pos += max(ln, 0)
            rows.append(row)
    return cols, rows
