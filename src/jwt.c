/*
 * JWT verification (see jwt.h).  The order of checks follows the order of
 * trust: size, structure, algorithm (the allow-list before any key is
 * touched), key, signature; only a token whose signature verified has its
 * claims read.  Every failure is one reason; the token itself is never
 * logged.
 */
#include "jwt.h"
#include "jwks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "config.h"
#include "log.h"
#include "util.h"

uint64_t jwt_refusals[JWT_REASON_COUNT];

enum key_type { KT_RSA = 1, KT_EC256, KT_EC384, KT_ED25519 };

struct jwt_key {
	char kid[128]; /* "" = none (PEM) */
	char alg[16];  /* "" = any of its type */
	enum key_type type;
	EVP_PKEY *pkey;
};

struct jwt_keys {
	struct jwt_key *keys;
	int n;
	uint8_t *secret; /* HS*; NULL = none */
	size_t secret_len;
};

static struct jwt_keys *in_use;
/* from each jwt_jwks_url (jwks.c), with the issuer the URL lies under:
 * its keys sign for that issuer only (NULL = for any allowed one) */
static struct jwt_keys *url_keys[JWKS_MAX_URLS];
static char *url_iss[JWKS_MAX_URLS];

/* what the files in use looked like when they were read (jwt_watch) */
struct file_id {
	bool set;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};
static struct file_id key_id, secret_id;
static uint64_t last_watch;

static struct file_id file_id_of(const char *path)
{
	struct file_id f = {0};
	struct stat st;
	if (path[0] && stat(path, &st) == 0) {
		f.set = true;
		f.dev = st.st_dev;
		f.ino = st.st_ino;
		f.size = st.st_size;
		f.mtime = st.st_mtim;
	}
	return f;
}

static bool same_file(const struct file_id *a, const struct file_id *b)
{
	return a->set == b->set && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

enum family { F_HS, F_RS, F_PS, F_ES, F_ED };

static const struct alg {
	const char *name;
	enum family family;
	const char *md; /* NULL for EdDSA */
	enum key_type type;
	size_t es_len; /* ES: raw r||s length */
} algs[] = {
    {"HS256", F_HS, "SHA256", 0, 0},         {"HS384", F_HS, "SHA384", 0, 0},
    {"HS512", F_HS, "SHA512", 0, 0},         {"RS256", F_RS, "SHA256", KT_RSA, 0},
    {"RS384", F_RS, "SHA384", KT_RSA, 0},    {"RS512", F_RS, "SHA512", KT_RSA, 0},
    {"PS256", F_PS, "SHA256", KT_RSA, 0},    {"PS384", F_PS, "SHA384", KT_RSA, 0},
    {"PS512", F_PS, "SHA512", KT_RSA, 0},    {"ES256", F_ES, "SHA256", KT_EC256, 64},
    {"ES384", F_ES, "SHA384", KT_EC384, 96}, {"EdDSA", F_ED, NULL, KT_ED25519, 0},
};

static const char *const reason_text[JWT_REASON_COUNT] = {
    "ok",
    "too large",
    "malformed",
    "algorithm none",
    "algorithm not allowed",
    "unknown key",
    "bad signature",
    "missing exp",
    "expired",
    "not yet valid",
    "issued in the future",
    "wrong issuer",
    "wrong audience",
    "missing tenant claim",
    "issuer not allowed",
    "user mismatch",
    "key of another issuer",
};

static const char *const reason_label[JWT_REASON_COUNT] = {
    "ok",
    "too_large",
    "malformed",
    "algorithm_none",
    "algorithm_not_allowed",
    "unknown_key",
    "bad_signature",
    "missing_exp",
    "expired",
    "not_yet_valid",
    "issued_in_the_future",
    "wrong_issuer",
    "wrong_audience",
    "missing_tenant_claim",
    "issuer_not_allowed",
    "user_mismatch",
    "key_of_another_issuer",
};

const char *jwt_reason_text(enum jwt_reason r)
{
	return r < JWT_REASON_COUNT ? reason_text[r] : "?";
}

const char *jwt_reason_label(enum jwt_reason r)
{
	return r < JWT_REASON_COUNT ? reason_label[r] : "?";
}

/* Is name an item of the comma/space separated list (exactly)? */
static bool list_has(const char *list, const char *name, bool nocase)
{
	size_t nlen = strlen(name);
	for (const char *p = list; p && *p;) {
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		const char *start = p;
		while (*p && *p != ',' && *p != ' ' && *p != '\t')
			p++;
		size_t l = (size_t)(p - start);
		if (l == nlen && nlen &&
		    (nocase ? strncasecmp(start, name, l) == 0 : memcmp(start, name, l) == 0))
			return true;
	}
	return false;
}

/* base64url without padding (RFC 7515 section 2), decoded by OpenSSL after
 * mapping it to the standard alphabet.  -1 when it is not base64url. */
static long b64url_decode(const char *in, size_t n, uint8_t *out, size_t outcap)
{
	if (n % 4 == 1 || (n + 3) / 4 * 3 > outcap)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)in[i];
		/* the URL-safe alphabet only: no padding, no white space */
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '_'))
			return -1;
	}
	char *std = malloc(n + 4);
	if (!std)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char ch = in[i];
		if (ch == '-')
			ch = '+';
		else if (ch == '_')
			ch = '/';
		std[i] = ch;
	}
	size_t pad = (4 - n % 4) % 4;
	for (size_t i = 0; i < pad; i++)
		std[n + i] = '=';
	int r = n + pad ? EVP_DecodeBlock(out, (const unsigned char *)std, (int)(n + pad)) : 0;
	free(std);
	if (r < 0)
		return -1;
	return (long)r - (long)pad;
}

/* ---- keys ---- */

static void keys_free(struct jwt_keys *k)
{
	if (!k)
		return;
	for (int i = 0; i < k->n; i++)
		EVP_PKEY_free(k->keys[i].pkey);
	free(k->keys);
	if (k->secret) {
		OPENSSL_cleanse(k->secret, k->secret_len);
		free(k->secret);
	}
	free(k);
}

static bool add_key(struct jwt_keys *k, EVP_PKEY *pkey, const char *kid, const char *alg, char *err,
                    size_t errlen, const char *where)
{
	enum key_type t;
	int id = EVP_PKEY_get_base_id(pkey);
	if (id == EVP_PKEY_RSA) {
		if (EVP_PKEY_get_bits(pkey) < 2048) {
			snprintf(err, errlen, "%s: RSA key shorter than 2048 bits", where);
			return false;
		}
		t = KT_RSA;
	} else if (id == EVP_PKEY_EC) {
		int bits = EVP_PKEY_get_bits(pkey);
		char group[64] = "";
		EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL);
		if (bits == 256 && (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0))
			t = KT_EC256;
		else if (bits == 384 && (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0))
			t = KT_EC384;
		else {
			snprintf(err, errlen, "%s: EC curve %s is not P-256 or P-384", where, group);
			return false;
		}
	} else if (id == EVP_PKEY_ED25519) {
		t = KT_ED25519;
	} else {
		snprintf(err, errlen, "%s: unsupported key type", where);
		return false;
	}
	struct jwt_key *nk = realloc(k->keys, sizeof(*nk) * (size_t)(k->n + 1));
	if (!nk) {
		snprintf(err, errlen, "%s: out of memory", where);
		return false;
	}
	k->keys = nk;
	struct jwt_key *key = &k->keys[k->n++];
	memset(key, 0, sizeof(*key));
	snprintf(key->kid, sizeof(key->kid), "%s", kid ? kid : "");
	snprintf(key->alg, sizeof(key->alg), "%s", alg ? alg : "");
	key->type = t;
	key->pkey = pkey;
	return true;
}

static BIGNUM *b64_bn(json_t *v)
{
	const char *s = json_string_value(v);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	uint8_t *buf = malloc(n + 3);
	long l = buf ? b64url_decode(s, n, buf, n + 3) : -1;
	BIGNUM *bn = l > 0 ? BN_bin2bn(buf, (int)l, NULL) : NULL;
	free(buf);
	return bn;
}

static EVP_PKEY *fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
	EVP_PKEY *pkey = NULL;
	if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

/* One JWK (RFC 7517/7518/8037) as a public key; NULL with a message. */
static EVP_PKEY *jwk_key(json_t *jwk, char *err, size_t errlen, const char *where)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	if (!kty || !bld) {
		snprintf(err, errlen, "%s: key without kty", where);
		OSSL_PARAM_BLD_free(bld);
		return NULL;
	}
	if (strcmp(kty, "RSA") == 0) {
		BIGNUM *n = b64_bn(json_object_get(jwk, "n")), *e = b64_bn(json_object_get(jwk, "e"));
		if (n && e && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
		    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
			pkey = fromdata("RSA", bld);
		BN_free(n);
		BN_free(e);
	} else if (strcmp(kty, "EC") == 0) {
		const char *crv = json_string_value(json_object_get(jwk, "crv"));
		const char *x = json_string_value(json_object_get(jwk, "x"));
		const char *y = json_string_value(json_object_get(jwk, "y"));
		size_t fl = crv && strcmp(crv, "P-256") == 0 ? 32 : crv && strcmp(crv, "P-384") == 0 ? 48 : 0;
		uint8_t pub[1 + 2 * 48], tmp[64];
		if (fl && x && y && b64url_decode(x, strlen(x), tmp, sizeof(tmp)) == (long)fl) {
			pub[0] = 4;
			memcpy(pub + 1, tmp, fl);
			if (b64url_decode(y, strlen(y), tmp, sizeof(tmp)) == (long)fl) {
				memcpy(pub + 1 + fl, tmp, fl);
				if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
				                                    fl == 32 ? "prime256v1" : "secp384r1",
				                                    0) &&
				    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
				                                     1 + 2 * fl))
					pkey = fromdata("EC", bld);
			}
		}
	} else if (strcmp(kty, "OKP") == 0) {
		const char *crv = json_string_value(json_object_get(jwk, "crv"));
		const char *x = json_string_value(json_object_get(jwk, "x"));
		uint8_t raw[40];
		if (crv && strcmp(crv, "Ed25519") == 0 && x &&
		    b64url_decode(x, strlen(x), raw, sizeof(raw)) == 32)
			pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, 32);
	} else {
		snprintf(err, errlen, "%s: unsupported kty \"%s\"", where, kty);
		OSSL_PARAM_BLD_free(bld);
		return NULL;
	}
	OSSL_PARAM_BLD_free(bld);
	if (!pkey)
		snprintf(err, errlen, "%s: invalid %s key", where, kty);
	return pkey;
}

static bool load_jwks(struct jwt_keys *k, json_t *doc, const char *path, char *err, size_t errlen)
{
	json_t *arr = json_object_get(doc, "keys");
	if (!json_is_array(arr)) {
		snprintf(err, errlen, "%s: a JWKS document needs a \"keys\" array", path);
		return false;
	}
	int before = k->n;
	size_t i;
	json_t *jwk;
	json_array_foreach(arr, i, jwk)
	{
		char where[512];
		snprintf(where, sizeof(where), "%s: key %zu", path, i);
		if (!json_is_object(jwk)) {
			snprintf(err, errlen, "%s is not an object", where);
			return false;
		}
		const char *use = json_string_value(json_object_get(jwk, "use"));
		if (use && strcmp(use, "sig") != 0)
			continue; /* an encryption key signs nothing */
		/* a key pgtenant cannot use (another kty or curve, a short RSA
		 * key) is skipped: an issuer's set may hold keys for others */
		EVP_PKEY *pkey = jwk_key(jwk, err, errlen, where);
		if (pkey && !add_key(k, pkey, json_string_value(json_object_get(jwk, "kid")),
		                     json_string_value(json_object_get(jwk, "alg")), err, errlen, where)) {
			EVP_PKEY_free(pkey);
			pkey = NULL;
		}
		if (!pkey)
			log_warning("%s; key skipped", err);
	}
	if (k->n == before) {
		snprintf(err, errlen, "%s: no usable signing key", path);
		return false;
	}
	return true;
}

static bool load_pem(struct jwt_keys *k, const char *path, char *err, size_t errlen)
{
	BIO *bio = BIO_new_file(path, "r");
	if (!bio) {
		snprintf(err, errlen, "cannot read jwt_key_file %s", path);
		return false;
	}
	EVP_PKEY *pkey;
	int n = 0;
	bool ok = true;
	while ((pkey = PEM_read_bio_PUBKEY(bio, NULL, util_no_passphrase, NULL)) != NULL) {
		char where[512];
		snprintf(where, sizeof(where), "%s: key %d", path, n++);
		if (!add_key(k, pkey, NULL, NULL, err, errlen, where)) {
			EVP_PKEY_free(pkey);
			ok = false;
			break;
		}
	}
	ERR_clear_error();
	BIO_free(bio);
	if (ok && n == 0) {
		snprintf(err, errlen, "%s: neither a JWKS document nor PEM public keys", path);
		ok = false;
	}
	return ok;
}

static char *read_file(const char *path, size_t *len, size_t max)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(max + 1);
	size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
	fclose(f);
	if (!buf || n > max) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

bool jwt_configure(const struct pgt_config *cfg, bool install, char *err, size_t errlen)
{
	/* identified before reading, so that a change during the read is seen next time */
	struct file_id kid_now = file_id_of(cfg->jwt_key_file), sid_now = file_id_of(cfg->jwt_secret_file);
	struct jwt_keys *k = calloc(1, sizeof(*k));
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	if (cfg->jwt_key_file[0]) {
		size_t len;
		char *text = read_file(cfg->jwt_key_file, &len, 4u << 20);
		if (!text) {
			snprintf(err, errlen, "cannot read jwt_key_file %s (missing, or over 4 MB)",
			         cfg->jwt_key_file);
			keys_free(k);
			return false;
		}
		json_error_t je;
		json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
		free(text);
		bool ok = doc ? load_jwks(k, doc, cfg->jwt_key_file, err, errlen)
		              : load_pem(k, cfg->jwt_key_file, err, errlen);
		json_decref(doc);
		if (!ok) {
			keys_free(k);
			return false;
		}
	}
	if (cfg->jwt_secret_file[0]) {
		size_t len;
		char *s = read_file(cfg->jwt_secret_file, &len, 4096);
		if (!s) {
			snprintf(err, errlen, "cannot read jwt_secret_file %s", cfg->jwt_secret_file);
			keys_free(k);
			return false;
		}
		if (len && s[len - 1] == '\n')
			len--;
		if (len && s[len - 1] == '\r')
			len--;
		if (len < 32) {
			OPENSSL_cleanse(s, len);
			free(s);
			snprintf(err, errlen, "jwt_secret_file %s: an HMAC secret needs at least 32 bytes",
			         cfg->jwt_secret_file);
			keys_free(k);
			return false;
		}
		k->secret = (uint8_t *)s;
		k->secret_len = len;
	}
	if (!install) {
		keys_free(k);
		return true;
	}
	keys_free(in_use);
	in_use = k;
	key_id = kid_now;
	secret_id = sid_now;
	if ((k->n || k->secret || cfg->jwt_jwks_url[0]) && !cfg->jwt_issuer[0])
		log_warning("jwt_issuer is empty: a token from any issuer the keys sign for is accepted");
	return true;
}

void jwt_watch(const struct pgt_config *cfg, uint64_t now)
{
	if ((!cfg->jwt_key_file[0] && !cfg->jwt_secret_file[0]) || now - last_watch < USEC_PER_SEC)
		return;
	last_watch = now;
	struct file_id k = file_id_of(cfg->jwt_key_file), s = file_id_of(cfg->jwt_secret_file);
	if (same_file(&k, &key_id) && same_file(&s, &secret_id))
		return;
	char err[512];
	const char *which = same_file(&k, &key_id) ? "jwt_secret_file" : "jwt_key_file";
	if (jwt_configure(cfg, true, err, sizeof(err))) {
		log_info("JWT keys re-read: %s changed", which);
	} else {
		/* a half-written file: keep the keys, and try again once it changes */
		log_error("%s; keeping the previous JWT keys", err);
		key_id = k;
		secret_id = s;
	}
}

void jwt_shutdown(void)
{
	keys_free(in_use);
	in_use = NULL;
	jwt_set_jwks(-1, NULL, NULL, 0, NULL, 0);
}

bool jwt_set_jwks(int idx, const char *issuer, const char *json, size_t len, char *err, size_t errlen)
{
	if (idx < 0) {
		for (int i = 0; i < JWKS_MAX_URLS; i++) {
			keys_free(url_keys[i]);
			url_keys[i] = NULL;
			free(url_iss[i]);
			url_iss[i] = NULL;
		}
		return true;
	}
	if (idx >= JWKS_MAX_URLS) {
		snprintf(err, errlen, "too many key set URLs");
		return false;
	}
	json_error_t je;
	json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "not a JSON object (%s)", je.text);
		json_decref(doc);
		return false;
	}
	struct jwt_keys *k = calloc(1, sizeof(*k));
	bool ok = k && load_jwks(k, doc, "jwt_jwks_url", err, errlen);
	json_decref(doc);
	if (ok && k->n == 0) {
		snprintf(err, errlen, "no signing key in the key set");
		ok = false;
	}
	if (!ok) {
		keys_free(k);
		return false;
	}
	keys_free(url_keys[idx]);
	url_keys[idx] = k;
	free(url_iss[idx]);
	url_iss[idx] = issuer ? xstrdup(issuer) : NULL;
	return true;
}

/* ---- verification ---- */

static bool verify_with(const struct alg *a, EVP_PKEY *pkey, const uint8_t *sig, size_t siglen,
                        const uint8_t *input, size_t inlen)
{
	uint8_t der[160];
	if (a->family == F_ES) {
		/* JWS carries r||s; OpenSSL verifies DER */
		if (siglen != a->es_len)
			return false;
		size_t h = siglen / 2;
		ECDSA_SIG *es = ECDSA_SIG_new();
		BIGNUM *r = BN_bin2bn(sig, (int)h, NULL), *s = BN_bin2bn(sig + h, (int)h, NULL);
		if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
			BN_free(r);
			BN_free(s);
			ECDSA_SIG_free(es);
			return false;
		}
		int dl = i2d_ECDSA_SIG(es, NULL);
		uint8_t *p = der;
		if (dl <= 0 || (size_t)dl > sizeof(der) || i2d_ECDSA_SIG(es, &p) != dl) {
			ECDSA_SIG_free(es);
			return false;
		}
		ECDSA_SIG_free(es);
		sig = der;
		siglen = (size_t)dl;
	}
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	bool ok = false;
	if (m && EVP_DigestVerifyInit_ex(m, &pctx, a->md, NULL, NULL, pkey, NULL) == 1) {
		if (a->family == F_PS &&
		    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0))
			goto out;
		ok = EVP_DigestVerify(m, sig, siglen, input, inlen) == 1;
	}
out:
	EVP_MD_CTX_free(m);
	ERR_clear_error();
	return ok;
}

/* iss: the token's (unverified) issuer, or NULL.  A URL's keys bound to
 * another issuer are not tried: a key of one tenant's user pool never
 * vouches for a token that claims another pool. */
static enum jwt_reason check_signature(const struct alg *a, const char *kid, const char *iss,
                                       const uint8_t *sig, size_t siglen, const uint8_t *input, size_t inlen)
{
	const struct jwt_keys *k = in_use;
	if (a->family == F_HS) {
		if (!k || !k->secret)
			return JWT_UNKNOWN_KEY;
		uint8_t mac[EVP_MAX_MD_SIZE];
		size_t maclen = 0;
		if (!EVP_Q_mac(NULL, "HMAC", NULL, a->md, NULL, k->secret, k->secret_len, input, inlen, mac,
		               sizeof(mac), &maclen))
			return JWT_BAD_SIGNATURE;
		return siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0 ? JWT_OK : JWT_BAD_SIGNATURE;
	}
	/* the file's keys and the URLs'; with a kid: the keys of that kid,
	 * else those without one (PEM) */
	enum { NSETS = JWKS_MAX_URLS + 1 };
	const struct jwt_keys *sets[NSETS] = {in_use};
	bool bound_elsewhere[NSETS] = {false};
	for (int n = 1; n < NSETS; n++) {
		sets[n] = url_keys[n - 1];
		const char *b = url_iss[n - 1];
		bound_elsewhere[n] = b && (!iss || strcmp(b, iss) != 0);
	}
	bool have_kid = false, foreign_kid = false;
	for (int n = 0; n < NSETS; n++)
		for (int i = 0; kid && sets[n] && i < sets[n]->n; i++)
			if (strcmp(sets[n]->keys[i].kid, kid) == 0) {
				if (bound_elsewhere[n])
					foreign_kid = true;
				else
					have_kid = true;
			}
	if (foreign_kid && !have_kid)
		return JWT_KEY_OF_OTHER_ISSUER;
	int tried = 0;
	for (int n = 0; n < NSETS; n++) {
		if (bound_elsewhere[n])
			continue;
		for (int i = 0; sets[n] && i < sets[n]->n; i++) {
			const struct jwt_key *key = &sets[n]->keys[i];
			if (key->type != a->type || (key->alg[0] && strcmp(key->alg, a->name) != 0))
				continue;
			if (kid && (have_kid ? strcmp(key->kid, kid) != 0 : key->kid[0] != '\0'))
				continue;
			tried++;
			if (verify_with(a, key->pkey, sig, siglen, input, inlen))
				return JWT_OK;
		}
	}
	return tried ? JWT_BAD_SIGNATURE : JWT_UNKNOWN_KEY;
}

static bool num(json_t *v, double *out)
{
	if (!json_is_number(v))
		return false;
	*out = json_number_value(v);
	return true;
}

/* A string claim into out; a value that does not fit is made unusable. */
static bool str_claim(json_t *v, char *out, size_t outlen)
{
	const char *s = json_string_value(v);
	if (!s)
		return false;
	size_t n = json_string_length(v);
	if (n >= outlen || memchr(s, 0, n))
		snprintf(out, outlen, "\x01");
	else
		memcpy(out, s, n + 1);
	return true;
}

/* A top-level claim by its whole name ("custom:tenant_id"), else a dotted
 * path into nested objects ("app_metadata.tenant"). */
static json_t *claim(json_t *payload, const char *name)
{
	json_t *v = json_object_get(payload, name);
	if (v || !strchr(name, '.'))
		return v;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", name);
	v = payload;
	char *save = NULL;
	for (char *seg = strtok_r(buf, ".", &save); seg && v; seg = strtok_r(NULL, ".", &save))
		v = json_is_object(v) ? json_object_get(v, seg) : NULL;
	return v;
}

static bool audience_ok(const struct pgt_config *cfg, json_t *payload)
{
	json_t *aud = json_object_get(payload, "aud");
	if (json_is_string(aud) && list_has(cfg->jwt_audience, json_string_value(aud), false))
		return true;
	if (json_is_array(aud)) {
		size_t i;
		json_t *v;
		json_array_foreach(aud, i, v)
		{
			if (json_is_string(v) && list_has(cfg->jwt_audience, json_string_value(v), false))
				return true;
		}
	}
	/* Cognito's access tokens have no aud and name the app client in
	 * client_id; a token with an aud is judged by it alone */
	json_t *cid = json_object_get(payload, "client_id");
	return !aud && json_is_string(cid) && list_has(cfg->jwt_audience, json_string_value(cid), false);
}

static json_t *decode_part(const char *p, size_t n)
{
	uint8_t *buf = malloc(n + 3);
	long l = buf ? b64url_decode(p, n, buf, n + 3) : -1;
	json_t *j = NULL;
	if (l > 0) {
		json_error_t je;
		j = json_loadb((const char *)buf, (size_t)l, JSON_REJECT_DUPLICATES, &je);
	}
	free(buf);
	if (j && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

enum jwt_reason jwt_verify(const struct pgt_config *cfg, const char *token, size_t len, int64_t now,
                           struct jwt_result *out)
{
	memset(out, 0, sizeof(*out));
	if (len > JWT_MAX_TOKEN)
		return JWT_TOO_LARGE;
	const char *d1 = memchr(token, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(token + len - d1 - 1)) : NULL;
	if (!d1 || !d2 || memchr(d2 + 1, '.', (size_t)(token + len - d2 - 1)) || d1 == token || d2 == d1 + 1)
		return JWT_MALFORMED;
	json_t *header = decode_part(token, (size_t)(d1 - token));
	if (!header)
		return JWT_MALFORMED;
	enum jwt_reason r = JWT_OK;
	json_t *payload = NULL;
	const char *alg = json_string_value(json_object_get(header, "alg"));
	json_t *kidv = json_object_get(header, "kid");
	const char *kid = json_string_value(kidv);
	const struct alg *a = NULL;
	if (!alg || (kidv && (!kid || strlen(kid) >= sizeof(((struct jwt_key *)0)->kid)))) {
		r = JWT_MALFORMED;
		goto done;
	}
	if (strcasecmp(alg, "none") == 0) {
		r = JWT_ALG_NONE;
		goto done;
	}
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcmp(algs[i].name, alg) == 0)
			a = &algs[i];
	if (!a || !list_has(cfg->jwt_algorithms, a->name, true)) {
		r = JWT_ALG_NOT_ALLOWED;
		goto done;
	}
	json_t *crit = json_object_get(header, "crit");
	if (crit) {
		/* no extension is understood, so none may be critical (RFC 7515 4.1.11) */
		r = JWT_MALFORMED;
		goto done;
	}
	/* the whole structure first (the payload is parsed, not trusted, before
	 * the signature is checked): a broken token is "malformed" whatever its
	 * signature */
	payload = decode_part(d1 + 1, (size_t)(d2 - d1 - 1));
	size_t slen = (size_t)(token + len - d2 - 1);
	uint8_t sig[2048]; /* RSA up to 16384 bits */
	long sl = b64url_decode(d2 + 1, slen, sig, sizeof(sig));
	if (!payload || sl < 0) {
		r = JWT_MALFORMED;
		goto done;
	}
	r = check_signature(a, kid, json_string_value(json_object_get(payload, "iss")), sig, (size_t)sl,
	                    (const uint8_t *)token, (size_t)(d2 - token));
	if (r != JWT_OK)
		goto done;
	double exp, nbf, iat, leeway = (double)cfg->jwt_leeway / USEC_PER_SEC;
	if (!num(json_object_get(payload, "exp"), &exp)) {
		r = JWT_MISSING_EXP;
		goto done;
	}
	if ((double)now > exp + leeway) {
		r = JWT_EXPIRED;
		goto done;
	}
	json_t *nbfv = json_object_get(payload, "nbf"), *iatv = json_object_get(payload, "iat");
	if ((nbfv && !num(nbfv, &nbf)) || (iatv && !num(iatv, &iat))) {
		r = JWT_MALFORMED; /* a date that is not a NumericDate */
		goto done;
	}
	if (nbfv && (double)now + leeway < nbf) {
		r = JWT_NOT_YET_VALID;
		goto done;
	}
	if (iatv && iat > (double)now + leeway) {
		r = JWT_ISSUED_IN_FUTURE;
		goto done;
	}
	str_claim(json_object_get(payload, "iss"), out->iss, sizeof(out->iss));
	if (cfg->jwt_issuer[0] && (!out->iss[0] || !list_has(cfg->jwt_issuer, out->iss, false))) {
		r = JWT_WRONG_ISSUER;
		goto done;
	}
	if (cfg->jwt_audience[0] && !audience_ok(cfg, payload)) {
		r = JWT_WRONG_AUDIENCE;
		goto done;
	}
	out->exp = exp < 4e18 ? (int64_t)exp : INT64_MAX;
	str_claim(json_object_get(payload, "sub"), out->sub, sizeof(out->sub));
	json_t *tc = cfg->jwt_tenant_claim[0] ? claim(payload, cfg->jwt_tenant_claim) : NULL;
	out->has_tenant = tc != NULL;
	if (tc && !str_claim(tc, out->tenant, sizeof(out->tenant)))
		snprintf(out->tenant, sizeof(out->tenant), "\x01"); /* not a string: names no valid tenant */
	out->has_user = cfg->jwt_user_claim[0] &&
	                str_claim(claim(payload, cfg->jwt_user_claim), out->user, sizeof(out->user));
done:
	json_decref(header);
	json_decref(payload);
	return r;
}

const char *jwt_map_user(const char *map, const char *value, char *out, size_t outlen)
{
	/* "analyst=app_ro, *=app": the first exact match, else "*" */
	const char *fallback = NULL;
	size_t fl = 0;
	for (const char *p = map; p && *p;) {
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		const char *k = p;
		while (*p && *p != '=' && *p != ',')
			p++;
		if (*p != '=')
			continue;
		size_t kl = (size_t)(p - k);
		while (kl && (k[kl - 1] == ' ' || k[kl - 1] == '\t'))
			kl--;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		const char *v = p;
		while (*p && *p != ',' && *p != ' ' && *p != '\t')
			p++;
		size_t vl = (size_t)(p - v);
		if (!vl)
			continue;
		if (value && kl == strlen(value) && memcmp(k, value, kl) == 0) {
			snprintf(out, outlen, "%.*s", (int)vl, v);
			return out;
		}
		if (kl == 1 && *k == '*' && !fallback) {
			fallback = v;
			fl = vl;
		}
	}
	if (!fallback)
		return NULL;
	snprintf(out, outlen, "%.*s", (int)fl, fallback);
	return out;
}
