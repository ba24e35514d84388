"""A small TCP proxy for fault injection between pgtenant and PostgreSQL:
it forwards both directions and lets a test rewrite the server's messages
(whole protocol messages, after the startup exchange) with a callback."""
import socket
import struct
import threading


class FaultProxy:
    def __init__(self, upstream_port, rewrite=None):
        """rewrite(type_byte, body) -> bytes to send instead of the message
        (return None to pass it through)."""
        self.upstream_port = upstream_port
        self.rewrite = rewrite
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.upstream_bytes = bytearray()  # everything sent towards the server
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.listener.close()

    def _accept(self):
        while not self.closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(down, up, self.upstream_bytes), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(up, down), daemon=True).start()

    @staticmethod
    def _pipe(src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                record += data
                dst.sendall(data)
        except OSError:
            pass
        _shutdown(src, dst)

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
