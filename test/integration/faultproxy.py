"""A small TCP fault injector for tests, placed between pgtenant and
PostgreSQL or between a client and pgtenant.

    proxy = FaultProxy(upstream_port, faults=[Fault("down", "stall", type=b"D", count=50)])
    ... point pgtenant (or a client) at proxy.port ...
    proxy.close()

Directions: "up" is what the connecting side sends towards upstream_port
(client -> pgtenant, or pgtenant -> PostgreSQL); "down" is the answer.

A Fault fires at a chosen point of one direction's byte stream:
  type=b"D", count=N   the header of the N-th message of that type (type None:
                       any typed message; startup-style packets are untyped)
  after_bytes=N        once N bytes have gone through in that direction
  and does one of these actions there:
  delay      sleep `seconds`, then forward on
  stall      stop forwarding that direction and stop reading it (so the
             sender's socket buffers fill), keep both sockets open
  freeze     stall both directions (a half-open, dead peer)
  drop       close both sockets quietly (FIN)
  reset      close both sockets with SO_LINGER 0 (RST)
  truncate   forward `keep` bytes of the message, then `then` ("stall",
             "drop" or "reset")
  slow       from here on forward at `rate` bytes per second
A fault fires once (for the first connection reaching the point) unless
every_conn=True; `conn` (0-based accept order) limits it to one connection.
`fired` is an Event set when it fired.

rcvbuf= sets SO_RCVBUF of the accepted sockets (a small one makes a stall
close the sender's TCP window quickly).  The older mode, rewrite(type_byte,
body) -> bytes|None called for every whole message the server sends, is
kept for tests that rewrite answers.
"""
import socket
import struct
import threading
import time

SSL_REQUEST = 80877103


class Fault:
    def __init__(self, direction, action, type=None, count=1, after_bytes=None, seconds=0.0, keep=0,
                 then="stall", rate=1, conn=None, every_conn=False):
        assert direction in ("up", "down")
        assert action in ("delay", "stall", "freeze", "drop", "reset", "truncate", "slow")
        self.direction, self.action, self.type, self.count = direction, action, type, count
        self.after_bytes, self.seconds, self.keep, self.then, self.rate = after_bytes, seconds, keep, then, rate
        self.conn, self.every_conn = conn, every_conn
        self.fired = threading.Event()
        self.lock = threading.Lock()

    def _claim(self):
        with self.lock:
            if self.fired.is_set() and not self.every_conn:
                return False
            self.fired.set()
            return True


class _Conn:
    """One proxied connection: the accepted socket and the upstream one."""

    def __init__(self, proxy, index, down, up):
        self.proxy, self.index, self.down, self.up = proxy, index, down, up
        self.frozen = threading.Event()
        self.gone = threading.Event()
        self.ssl_asked = False

    def stalled(self):
        """Block until the proxy or this connection is closed."""
        while not (self.gone.is_set() or self.proxy.closed):
            time.sleep(0.05)

    def kill(self, rst):
        self.gone.set()
        for s in (self.down, self.up):
            try:
                if rst:
                    # SHUT_RD sends nothing but wakes a thread blocked in recv(): the
                    # socket is really closed (RST, for linger 0) once nobody uses it
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class _Dir:
    """Parser and fault state of one direction of one connection."""

    def __init__(self, conn, name):
        self.conn, self.name = conn, name
        self.typed = name == "down"  # "up" starts with startup-style packets
        self.raw = False  # TLS was accepted: no more parsing
        self.hdr = b""
        self.left = 0  # bytes of the current message not seen yet
        self.offset = 0  # bytes consumed so far (position in the stream)
        self.counts = {}
        self.rate = None
        self.pending = []  # (stream offset, action, fault)
        for f in conn.proxy.faults:
            if f.direction == name and f.after_bytes is not None and f.conn in (None, conn.index):
                if f.action == "truncate":
                    self.pending.append((f.after_bytes + f.keep, f.then, f))
                else:
                    self.pending.append((f.after_bytes, f.action, f))

    def _header(self, start):
        """A message header is complete: count it and arm matching faults."""
        if self.typed:
            t, (ln,) = self.hdr[:1], struct.unpack("!I", self.hdr[1:5])
            self.left = 1 + ln - 5
        else:
            t, (ln,) = None, struct.unpack("!I", self.hdr[:4])
            self.left = ln - 4
            if self.name == "up":
                code = struct.unpack("!I", self.hdr[4:8])[0] if len(self.hdr) >= 8 else 0
                if code == SSL_REQUEST:
                    self.conn.ssl_asked = True
                elif code >> 16 == 3:
                    self.typed = True  # the startup packet: typed messages follow
        self.left = max(self.left, 0)
        self.counts[t] = n = self.counts.get(t, 0) + 1
        for f in self.conn.proxy.faults:
            if f.direction != self.name or f.after_bytes is not None or f.conn not in (None, self.conn.index):
                continue
            if f.type is not None and f.type != t:
                continue
            n = self.counts[t] if f.type is not None else sum(v for k, v in self.counts.items() if k)
            if t is None and f.type is None or n != f.count:
                continue
            if f.action == "truncate":
                self.pending.append((start + f.keep, f.then, f))
            else:
                self.pending.append((start, f.action, f))
        self.pending.sort(key=lambda p: p[0])

    def feed(self, data):
        """Split data into (bytes, None) pieces to forward and (None, (action,
        fault)) points where a fault may fire, in stream order."""
        out = []
        i = 0
        cur = bytearray()
        while i < len(data):
            if self.raw:
                cur += data[i:]
                self.offset += len(data) - i
                break
            if self.left == 0:
                if not self.hdr and self.name == "down" and self.conn.ssl_asked and not self.counts:
                    # the one-byte answer to an SSLRequest
                    self.conn.ssl_asked = False
                    self.raw = data[i:i + 1] == b"S"
                    cur += data[i:i + 1]
                    i += 1
                    self.offset += 1
                    continue
                need = (5 if self.typed else 8) - len(self.hdr)
                take = data[i:i + need]
                self.hdr += take
                i += len(take)
                if len(self.hdr) < (5 if self.typed else 8):
                    continue
                start = self.offset
                self._header(start)
                cur += self.hdr
                self.offset += len(self.hdr)
                if len(self.hdr) == 8:  # an untyped packet's 8 bytes include 4 of its body
                    self.left = max(self.left - 4, 0)
                self.hdr = b""
            else:
                take = min(self.left, len(data) - i)
                cur += data[i:i + take]
                i += take
                self.left -= take
                self.offset += take
        self._emit(out, cur)
        return out

    def _emit(self, out, cur):
        """Split the bytes cur (ending at self.offset) at pending offsets."""
        base = self.offset - len(cur)
        pos = 0
        while self.pending and self.pending[0][0] <= base + len(cur):
            at, action, f = self.pending.pop(0)
            cut = max(at - base, pos)
            if cut > pos:
                out.append((bytes(cur[pos:cut]), None))
                pos = cut
            out.append((None, (action, f)))
        if pos < len(cur):
            out.append((bytes(cur[pos:]), None))


class FaultProxy:
    def __init__(self, upstream_port, rewrite=None, faults=None, rcvbuf=None, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.rewrite = rewrite
        self.faults = list(faults or [])
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            # set before listen(): accepted sockets inherit it (and the window scale follows it)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.conns = []
        self.upstream_bytes = bytearray()  # everything sent towards upstream
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.listener.close()
        for c in self.conns:
            c.kill(False)

    def _accept(self):
        while not self.closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream)
            except OSError:
                down.close()
                continue
            c = _Conn(self, len(self.conns), down, up)
            self.conns.append(c)
            threading.Thread(target=self._pipe, args=(c, "up"), daemon=True).start()
            if self.rewrite:
                threading.Thread(target=self._server_to_client, args=(up, down), daemon=True).start()
            else:
                threading.Thread(target=self._pipe, args=(c, "down"), daemon=True).start()

    def _pipe(self, c, name):
        src, dst = (c.down, c.up) if name == "up" else (c.up, c.down)
        d = _Dir(c, name)
        try:
            pieces = d.feed(b"")  # faults at after_bytes=0
            while True:
                for data, fault in pieces:
                    if c.frozen.is_set():
                        c.stalled()
                        return
                    if fault is not None:
                        if not self._act(c, d, *fault):
                            return
                    else:
                        self._send(c, d, dst, data)
                data = src.recv(65536)
                if not data:
                    break
                if name == "up":
                    self.upstream_bytes += data
                pieces = d.feed(data)
        except OSError:
            pass
        # one side is gone: so is the other (close() also resets a peer
        # whose data was left unread, as a dead proxy would)
        if not c.gone.is_set():
            c.kill(False)

    def _act(self, c, d, action, f):
        """Do a fault's action; False when this direction is done."""
        if not f._claim():
            return True
        if action == "delay":
            time.sleep(f.seconds)
            return True
        if action == "slow":
            d.rate = f.rate
            return True
        if action == "freeze":
            c.frozen.set()
        if action in ("stall", "freeze"):
            c.stalled()
            return False
        c.kill(action == "reset")
        return False

    @staticmethod
    def _send(c, d, dst, data):
        if d.rate is None:
            dst.sendall(data)
            return
        for i in range(0, len(data), max(1, d.rate // 10)):
            if c.gone.is_set():
                raise OSError("closed")
            dst.sendall(data[i:i + max(1, d.rate // 10)])
            time.sleep(0.1 if d.rate >= 10 else 1.0 / d.rate)

    def _server_to_client(self, up, down):
        buf = b""
        first = True
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    break
                buf += data
                if first and buf[:1] == b"N":
                    # the one-byte answer to pgtenant's SSLRequest (server_tls_sslmode
                    # prefer); no message the server sends starts a session with N
                    down.sendall(b"N")
                    buf = buf[1:]
                first = False
                out = b""
                while len(buf) >= 5:
                    (ln,) = struct.unpack("!I", buf[1:5])
                    if len(buf) < 1 + ln:
                        break
                    t, body, buf = buf[:1], buf[5:1 + ln], buf[1 + ln:]
                    new = self.rewrite(t, body) if self.rewrite else None
                    out += new if new is not None else t + struct.pack("!I", ln) + body
                down.sendall(out)
        except OSError:
            pass
        _shutdown(up, down)


def _shutdown(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def error_message(sqlstate, text, severity="ERROR"):
    fields = b"S" + severity.encode() + b"\0V" + severity.encode() + b"\0C" + sqlstate.encode() + b"\0M" + \
        text.encode() + b"\0\0"
    return b"E" + struct.pack("!I", 4 + len(fields)) + fields
