"""Keys and tokens for the JWT tests: key pairs made with the `openssl`
command-line tool (RSA 2048, EC P-256, EC P-384, Ed25519), their public
halves as PEM files and as JWKS documents (n/e, x/y, x built with
python3-cryptography from the PEMs, base64url without padding), and
compact JWS tokens signed with PyJWT, or put together by hand for what
PyJWT refuses to make (alg none, an HMAC keyed with a public key PEM,
broken encodings).
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

GENPKEY = {
    "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "ec256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "ec384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "ed25519": ["-algorithm", "ED25519"],
}


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj):
    return b64url(json.dumps(obj, separators=(",", ":")))


def _openssl(*args):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))


class Key:
    """One key pair made by openssl: private and public PEM files."""

    def __init__(self, directory, name, kind):
        self.name = name
        self.kind = kind
        self.private = os.path.join(directory, name + ".key")
        self.public = os.path.join(directory, name + ".pub")
        _openssl("genpkey", *GENPKEY[kind], "-out", self.private)
        os.chmod(self.private, 0o600)
        _openssl("pkey", "-in", self.private, "-pubout", "-out", self.public)
        with open(self.private, "rb") as f:
            self.private_pem = f.read()
        with open(self.public, "rb") as f:
            self.public_pem = f.read()

    def jwk(self, kid=None, alg=None, use=None):
        """The public key as a JWK, from the PEM openssl wrote."""
        pub = serialization.load_pem_public_key(self.public_pem)
        if isinstance(pub, rsa.RSAPublicKey):
            nums = pub.public_numbers()
            d = {"kty": "RSA",
                 "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
                 "e": b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big"))}
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            size = (pub.curve.key_size + 7) // 8
            nums = pub.public_numbers()
            d = {"kty": "EC", "crv": {"secp256r1": "P-256", "secp384r1": "P-384"}[pub.curve.name],
                 "x": b64url(nums.x.to_bytes(size, "big")), "y": b64url(nums.y.to_bytes(size, "big"))}
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            d = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        else:
            raise TypeError(type(pub))
        if kid is not None:
            d["kid"] = kid
        if alg is not None:
            d["alg"] = alg
        if use is not None:
            d["use"] = use
        return d


class KeySet:
    """The suite's keys, made once per module in directory."""

    def __init__(self, directory):
        self.dir = str(directory)
        self.rsa = Key(self.dir, "rsa", "rsa")
        self.rsa2 = Key(self.dir, "rsa2", "rsa")          # the rotation's new key
        self.rsa_other = Key(self.dir, "rsa-other", "rsa")  # never published anywhere
        self.ec256 = Key(self.dir, "ec256", "ec256")
        self.ec384 = Key(self.dir, "ec384", "ec384")
        self.ed = Key(self.dir, "ed25519", "ed25519")
        self.secret = b"hmac-secret-for-the-jwt-tests-0123456789abcdef"
        self.secret_file = self.path("hmac.secret")
        with open(self.secret_file, "wb") as f:
            f.write(self.secret + b"\n")  # one trailing newline, which pgtenant removes
        # kid -> key; "rsa-rs256" is the RSA key again, bound to RS256 by "alg"
        self.kids = {"rsa-1": self.rsa, "ec256-1": self.ec256, "ec384-1": self.ec384, "ed-1": self.ed,
                     "rsa-rs256": self.rsa}
        self.jwks = self.write_jwks("jwks.json", [
            self.rsa.jwk("rsa-1"),
            self.ec256.jwk("ec256-1", alg="ES256", use="sig"),
            self.ec384.jwk("ec384-1"),
            self.ed.jwk("ed-1", alg="EdDSA"),
            self.rsa.jwk("rsa-rs256", alg="RS256", use="sig"),
        ])
        self.pem = self.write_pem("keys.pem", [self.rsa, self.ec256, self.ed])

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_jwks(self, name, jwks):
        """Write {"keys": jwks} atomically (rename); return the path."""
        path = self.path(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"keys": jwks}, f, indent=1)
        os.replace(tmp, path)
        return path

    def write_pem(self, name, keys):
        path = self.path(name)
        with open(path, "wb") as f:
            for k in keys:
                f.write(k.public_pem)
        return path


# which key signs which algorithm by default
ALG_KEY = {"RS256": ("rsa", "rsa-1"), "RS384": ("rsa", "rsa-1"), "RS512": ("rsa", "rsa-1"),
           "PS256": ("rsa", "rsa-1"), "PS384": ("rsa", "rsa-1"), "PS512": ("rsa", "rsa-1"),
           "ES256": ("ec256", "ec256-1"), "ES384": ("ec384", "ec384-1"), "EdDSA": ("ed", "ed-1"),
           "HS256": (None, None), "HS384": (None, None), "HS512": (None, None)}

UNSET = object()


def claims(tenant="acme", sub="app", iss=None, aud=None, lifetime=300, now=None, **extra):
    """A claim set: exp now + lifetime, iat now, sub, iss and aud if given,
    the tenant as custom:tenant_id (tenant=None leaves it out); extra claims
    are added, and an extra claim given as UNSET removes that claim."""
    now = int(time.time()) if now is None else now
    c = {"iat": now, "exp": now + lifetime}
    for k, v in (("sub", sub), ("iss", iss), ("aud", aud), ("custom:tenant_id", tenant)):
        if v is not None and v is not UNSET:
            c[k] = v
    for k, v in extra.items():
        k = k.replace("__", ":")
        if v is UNSET:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def sign(keys, payload, alg="RS256", key=None, kid=UNSET, headers=None):
    """A token for payload signed with alg.  key: a Key (default: the key
    ALG_KEY names) or, for HS*, the secret bytes (default: keys.secret);
    kid: default the kid ALG_KEY names, None for no kid."""
    name, default_kid = ALG_KEY[alg]
    if key is None:
        key = keys.secret if name is None else getattr(keys, name)
    if kid is UNSET:
        kid = default_kid
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    secret = key.private_pem if isinstance(key, Key) else key
    return jwt.encode(payload, secret, algorithm=alg, headers=h or None)


def hand_made(header, payload, signature=b""):
    """header.payload.signature from objects (or already encoded strings/bytes)."""
    def part(x):
        if isinstance(x, (dict, list, int, float)) or x is None:
            return b64url_json(x)
        return x if isinstance(x, str) else b64url(x)
    return "%s.%s.%s" % (part(header), part(payload), b64url(signature) if isinstance(signature, bytes)
                         else signature)


def hmac_token(secret, payload, alg="HS256", kid=None):
    """An HS* token made without PyJWT (which will not key an HMAC with a
    PEM public key): the classic algorithm-confusion attack."""
    h = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        h["kid"] = kid
    signing_input = "%s.%s" % (b64url_json(h), b64url_json(payload))
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret, signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


def tamper_payload(token, **changes):
    """The token with its payload changed (claims updated) and the original signature."""
    h, p, s = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    payload.update(changes)
    return "%s.%s.%s" % (h, b64url_json(payload), s)


def flip_signature(token):
    """The token with one bit of its signature flipped."""
    h, p, s = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return "%s.%s.%s" % (h, p, b64url(bytes(raw)))


def sized_token(keys, size, payload, alg="RS256"):
    """A validly signed token exactly size bytes long (a padding claim and
    a header field of adjusted lengths)."""
    for hpad in range(0, 4):
        base = sign(keys, dict(payload, pad=""), alg, headers={"x": "y" * hpad} if hpad else None)
        for extra in range(max(0, (size - len(base)) * 3 // 4 - 8), (size - len(base)) * 3 // 4 + 8):
            t = sign(keys, dict(payload, pad="p" * extra), alg, headers={"x": "y" * hpad} if hpad else None)
            if len(t) == size:
                return t
            if len(t) > size:
                break
    raise AssertionError("no token of %d bytes" % size)


def sign_bytes(keys, payload_bytes, alg="RS256", key=None, kid=UNSET):
    """A correctly signed token whose payload is any bytes (not JSON, an
    array...): so that a refusal cannot come from the signature."""
    name, default_kid = ALG_KEY[alg]
    key = key or getattr(keys, name)
    kid = default_kid if kid is UNSET else kid
    return jwt.api_jws.PyJWS().encode(payload_bytes, key.private_pem, algorithm=alg,
                                      headers={"kid": kid} if kid else None)


def sign_input(key, signing_input):
    """The RS256 signature (base64url) of signing_input, whatever it holds
    (e.g. a payload part that is not valid base64url)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    priv = serialization.load_pem_private_key(key.private_pem, password=None)
    return b64url(priv.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))
