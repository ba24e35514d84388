"""Test certificates made with the `openssl` command-line tool, for the TLS
tests: a CA, leaf certificates it signs (server certificates with DNS and IP
subject alternative names, client certificates whose CN is a user name), and
raw TLS client sockets (through an SSLRequest, or direct TLS with ALPN as
PostgreSQL 17 clients do) for tests that need to look at the handshake
itself.

Keys are EC P-256 (quick to make), certificates are valid for a few days,
and every key file is mode 0600: libpq refuses a client key that others can
read, and PostgreSQL a server key.
"""
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess

SSL_REQUEST = struct.pack("!II", 8, 80877103)


class Pair:
    """A certificate and its key, as files."""

    def __init__(self, cert, key, cn):
        self.cert = cert
        self.key = key
        self.cn = cn

    def der(self):
        with open(self.cert) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def end_point_hash(self):
        """tls-server-end-point channel binding data (RFC 5929) for this
        certificate: its DER hashed with the signature's hash, SHA-256 here."""
        return hashlib.sha256(self.der()).digest()

    def install(self, directory, name, owner=None):
        """Copy the pair into directory as name.crt / name.key (key 0600),
        owned by owner if given; return the new Pair."""
        cert = os.path.join(directory, name + ".crt")
        key = os.path.join(directory, name + ".key")
        shutil.copyfile(self.cert, cert)
        shutil.copyfile(self.key, key)
        os.chmod(cert, 0o644)
        os.chmod(key, 0o600)
        if owner:
            shutil.chown(cert, owner)
            shutil.chown(key, owner)
        return Pair(cert, key, self.cn)


class CertMaker:
    def __init__(self, directory, days=3):
        self.dir = str(directory)
        self.days = str(days)
        self.serial = 1000

    def _openssl(self, *args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))

    def _paths(self, name):
        return os.path.join(self.dir, name + ".crt"), os.path.join(self.dir, name + ".key")

    def ca(self, name, cn):
        cert, key = self._paths(name)
        self._openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", key, "-out", cert, "-days", self.days, "-sha256", "-subj", "/CN=" + cn,
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        os.chmod(key, 0o600)
        return Pair(cert, key, cn)

    def issue(self, name, cn, ca, san=(), client=False):
        """A leaf certificate signed by ca: a server certificate with the
        subject alternative names san (e.g. "DNS:localhost", "IP:127.0.0.1"),
        or with client=True a client certificate."""
        cert, key = self._paths(name)
        csr = os.path.join(self.dir, name + ".csr")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints = critical, CA:FALSE\n"
                    "keyUsage = critical, digitalSignature\n"
                    "extendedKeyUsage = %s\n"
                    "subjectKeyIdentifier = hash\n"
                    "authorityKeyIdentifier = keyid\n" % ("clientAuth" if client else "serverAuth"))
            if san:
                f.write("subjectAltName = %s\n" % ", ".join(san))
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        self.serial += 1
        self._openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial",
                      str(self.serial), "-days", self.days, "-sha256", "-extfile", ext, "-out", cert)
        os.chmod(key, 0o600)
        return Pair(cert, key, cn)


def client_context(cafile=None, cert=None, alpn=None, check_hostname=False, minimum=None, maximum=None):
    """An ssl client context: verifies the peer against cafile if given
    (without host name check unless asked), presents cert if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def ssl_request(port, host="127.0.0.1", timeout=10):
    """A TCP socket that has sent an SSLRequest; returns (socket, the one-byte answer)."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(SSL_REQUEST)
    return s, s.recv(1)


def tls_connect(port, ctx=None, server_hostname=None, direct=False, timeout=10):
    """A TLS socket to a PostgreSQL-protocol server: SSLRequest first (the
    answer must be 'S'), or with direct=True a ClientHello straight away."""
    ctx = ctx or client_context(alpn=["postgresql"] if direct else None)
    if direct:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    else:
        s, answer = ssl_request(port, timeout=timeout)
        if answer != b"S":
            s.close()
            raise AssertionError("SSLRequest answered %r" % answer)
    try:
        return ctx.wrap_socket(s, server_hostname=server_hostname)
    except BaseException:
        s.close()
        raise


def client_hello(server_hostname=None, alpn=None):
    """The bytes of a real TLS ClientHello (from Python's ssl, through memory BIOs)."""
    ctx = client_context(alpn=alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
