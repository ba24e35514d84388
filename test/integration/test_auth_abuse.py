"""Failed logins cannot freeze the one event loop and are throttled per
address: a failure is answered after auth_failure_delay, doubling with each
further failure from the address; a success answers at once and resets the
growth; an unknown user fails like a wrong password; clients waiting for a
delayed answer cost the loop nothing, even when they hang up meanwhile.

The wrong-password clients speak the wire protocol themselves and send a
random proof, so the client side costs no PBKDF2 and the timings measure
pgtenant alone."""
import base64
import os
import socket
import struct
import time

import pgwire
from conftest import login_error

DELAY = 0.3


def delayed_bouncer(bouncer_factory, **settings):
    # max_login_clients: room for the 50 attempts of one address below
    s = {"auth_failure_delay": str(DELAY), "max_login_clients": "1000"}
    s.update(settings)
    return bouncer_factory(settings=s)


def start_scram(b, user="app"):
    """Startup and SASLInitialResponse; returns (socket, server-first attributes)."""
    s = pgwire.connect(b)
    s.sendall(pgwire.startup_packet({"user": user, "database": "appdb"}))
    t, body = pgwire.recv_msg(s)
    assert t == b"R" and struct.unpack("!I", body[:4])[0] == 10, (t, body)
    first = ("n,,n=,r=" + base64.b64encode(os.urandom(18)).decode()).encode()
    s.sendall(pgwire.msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
    t, body = pgwire.recv_msg(s)
    assert t == b"R" and struct.unpack("!I", body[:4])[0] == 11, (t, body)
    return s, dict(kv.split("=", 1) for kv in body[4:].decode().split(","))


def send_wrong_proof(s, attrs):
    proof = base64.b64encode(os.urandom(32)).decode()
    s.sendall(pgwire.msg(b"p", ("c=biws,r=%s,p=%s" % (attrs["r"], proof)).encode()))


def wrong_login(b, user="app"):
    """A SCRAM login with a wrong proof; returns (seconds until the answer, its fields)."""
    s, attrs = start_scram(b, user)
    send_wrong_proof(s, attrs)
    t0 = time.monotonic()
    t, body = pgwire.recv_msg(s)
    elapsed = time.monotonic() - t0
    s.close()
    assert t == b"E", (t, body)
    return elapsed, pgwire.error_fields(body)


def timed_login_query(b):
    t0 = time.monotonic()
    s, _ = pgwire.login(b)
    assert pgwire.data_rows(pgwire.query(s, "select 42")) == ["42"]
    s.close()
    return time.monotonic() - t0


def test_failures_are_delayed_and_grow_until_a_success(bouncer_factory):
    b = delayed_bouncer(bouncer_factory)
    d1, f1 = wrong_login(b)
    assert f1["C"] == "28P01" and f1["M"] == 'password authentication failed for user "app"'
    assert DELAY <= d1 < DELAY + 1.5
    d2, f2 = wrong_login(b)
    assert f2["C"] == "28P01"
    assert 2 * DELAY <= d2 < 2 * DELAY + 1.5
    # a correct login is answered at once, and resets the growth
    assert timed_login_query(b) < DELAY
    d3, _ = wrong_login(b)
    assert DELAY <= d3 < 4 * DELAY  # 4 * DELAY would be the third failure in a row


def test_zero_delay_answers_at_once(bouncer_factory):
    b = delayed_bouncer(bouncer_factory, auth_failure_delay="0")
    for _ in range(3):
        d, f = wrong_login(b)
        assert f["C"] == "28P01" and d < 0.2


def test_unknown_user_fails_like_a_wrong_password(bouncer_factory):
    b = delayed_bouncer(bouncer_factory)
    # what an attacker sees before the proof: a stable salt and the same
    # iteration count for a real user and for a made-up one
    salts = {}
    for user in ("app", "app", "nosuchuser", "nosuchuser", "otheruser"):
        s, attrs = start_scram(b, user)
        s.close()
        assert attrs["i"] == "4096" and len(base64.b64decode(attrs["s"])) == 16
        salts.setdefault(user, set()).add(attrs["s"])
    assert all(len(v) == 1 for v in salts.values()), salts
    assert len({next(iter(v)) for v in salts.values()}) == 3

    d_unknown, f_unknown = wrong_login(b, "nosuchuser")
    d_known, f_known = wrong_login(b, "app")
    assert f_unknown["C"] == f_known["C"] == "28P01"
    assert f_unknown["S"] == f_known["S"] == "FATAL"
    assert f_unknown["M"].replace("nosuchuser", "U") == f_known["M"].replace("app", "U")
    assert d_unknown >= DELAY and d_known >= 2 * DELAY  # one address, one growing delay
    timed_login_query(b)  # reset the growth
    code, msg = login_error(b, "nosuchuser", password="x")
    assert code == "28P01" and msg.startswith('password authentication failed for user "nosuchuser"')


def test_client_gone_during_the_delay(bouncer_factory):
    b = delayed_bouncer(bouncer_factory)
    socks = []
    for _ in range(2):
        s, attrs = start_scram(b)
        send_wrong_proof(s, attrs)
        socks.append(s)
    time.sleep(0.05)  # the failures are recorded, their answers pending
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()
    time.sleep(2 * DELAY + 0.2)  # past every timer: none may fire on a freed client
    assert b.proc.poll() is None
    assert timed_login_query(b) < 1.0
    assert b.log_contains("password authentication failed") == 0  # nobody was left to answer


def test_delayed_failures_do_not_stall_other_clients(bouncer_factory):
    b = delayed_bouncer(bouncer_factory)
    busy, _ = pgwire.login(b)
    pgwire.query(busy, "select 1")
    waiting = []
    for _ in range(50):
        s, attrs = start_scram(b)
        send_wrong_proof(s, attrs)
        waiting.append(s)
    # 50 answers are pending (the last ones for 16 * DELAY); the loop serves on
    t0 = time.monotonic()
    assert pgwire.data_rows(pgwire.query(busy, "select 7")) == ["7"]
    assert time.monotonic() - t0 < 0.5
    assert timed_login_query(b) < 0.5
    # and the first failure is answered on time meanwhile
    waiting[0].settimeout(3)
    t, body = pgwire.recv_msg(waiting[0])
    assert t == b"E" and pgwire.error_fields(body)["C"] == "28P01"
    for s in waiting:
        s.close()
    busy.close()
    assert timed_login_query(b) < 0.5
