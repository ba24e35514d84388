/*
 * SCRAM-SHA-256 and md5 password hashing.  Message parsing follows RFC 5802
 * section 7; attributes must appear in the order the RFC gives, which is what
 * PostgreSQL and every driver send.
 *
 * PBKDF2 (4096 iterations, ~1 ms) is the one expensive step, and it runs on
 * the single event loop: every path that would repeat it for the same input
 * goes through a cache instead (the client role's SaltedPassword table here,
 * the userlist's derived secrets, the mock secret of unknown users).
 *
 * Passwords are SASLprepped before PBKDF2, as PostgreSQL and libpq do, so
 * that a password with non-ASCII characters derives the same keys on both
 * sides.  SASLprep needs Unicode 3.2's mapping, normalisation (NFKC),
 * prohibition and bidi tables; libidn's stringprep has them, so pgtenant
 * carries no Unicode table of its own.
 */
#include "scram.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stringprep.h>

static uint64_t pbkdf2_runs;

uint64_t scram_pbkdf2_count(void)
{
	return pbkdf2_runs;
}

/* Valid UTF-8 as PostgreSQL checks it: no overlong forms, no surrogates,
 * nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *p)
{
	while (*p) {
		unsigned char c = *p;
		int n;
		unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
		if (c < 0x80)
			n = 0;
		else if (c >= 0xc2 && c <= 0xdf)
			n = 1;
		else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else
			return false;
		p++;
		for (int i = 0; i < n; i++, p++) {
			if (*p < (i == 0 ? lo : 0x80) || *p > (i == 0 ? hi : 0xbf))
				return false;
		}
	}
	return true;
}

char *scram_saslprep(const char *password)
{
	bool ascii = true;
	for (const unsigned char *p = (const unsigned char *)password; *p && ascii; p++)
		ascii = *p < 0x80;
	if (ascii || !utf8_valid((const unsigned char *)password))
		return xstrdup(password);
	char *out = NULL;
	/* unassigned code points are refused, as PostgreSQL refuses them */
	if (stringprep_profile(password, &out, "SASLprep", STRINGPREP_NO_UNASSIGNED) != STRINGPREP_OK ||
	    !out || !out[0]) {
		free(out);
		return xstrdup(password);
	}
	char *r = xstrdup(out);
	OPENSSL_cleanse(out, strlen(out));
	free(out);
	return r;
}

static bool pbkdf2(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                   uint8_t out[SCRAM_KEY_LEN])
{
	pbkdf2_runs++;
	char *prepped = scram_saslprep(password);
	size_t n = strlen(prepped);
	bool ok = PKCS5_PBKDF2_HMAC(prepped, (int)n, salt, (int)salt_len, iterations, EVP_sha256(),
	                            SCRAM_KEY_LEN, out) == 1;
	OPENSSL_cleanse(prepped, n);
	free(prepped);
	return ok;
}

size_t scram_b64_encode(const uint8_t *in, size_t n, char *out)
{
	return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap)
{
	if (n % 4 != 0 || (n / 4) * 3 > outcap + 2)
		return -1;
	uint8_t tmp[512];
	if ((n / 4) * 3 > sizeof(tmp))
		return -1;
	int r = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
	if (r < 0)
		return -1;
	/* EVP_DecodeBlock counts padding bytes as data: remove them */
	if (n >= 1 && in[n - 1] == '=')
		r--;
	if (n >= 2 && in[n - 2] == '=')
		r--;
	if (r < 0 || (size_t)r > outcap)
		return -1;
	memcpy(out, tmp, (size_t)r);
	return r;
}

static void hmac256(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = SCRAM_KEY_LEN;
	HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &olen);
}

static void sha256(const uint8_t *in, size_t n, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = SCRAM_KEY_LEN;
	EVP_Digest(in, n, out, &olen, EVP_sha256(), NULL);
}

bool scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                                struct scram_secret *out)
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	if (salt_len > sizeof(out->salt) || iterations < 1)
		return false;
	if (!pbkdf2(password, salt, salt_len, iterations, salted))
		return false;
	out->iterations = iterations;
	memcpy(out->salt, salt, salt_len);
	out->salt_len = salt_len;
	hmac256(salted, sizeof(salted), "Client Key", 10, client_key);
	sha256(client_key, sizeof(client_key), out->stored_key);
	hmac256(salted, sizeof(salted), "Server Key", 10, out->server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	return true;
}

/* Per-process random material of the mock secret.  The keys are random
 * bytes, not derived from any password, so no proof can match them; the salt
 * key makes the salt a function of the name that outsiders cannot compute. */
static struct {
	bool ready;
	uint8_t salt_key[SCRAM_KEY_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
} mock;

bool scram_mock_secret(const char *user, struct scram_secret *out)
{
	if (!mock.ready) {
		if (!util_random(mock.salt_key, SCRAM_KEY_LEN) ||
		    !util_random(mock.stored_key, SCRAM_KEY_LEN) ||
		    !util_random(mock.server_key, SCRAM_KEY_LEN))
			return false;
		mock.ready = true;
	}
	uint8_t mac[SCRAM_KEY_LEN];
	hmac256(mock.salt_key, SCRAM_KEY_LEN, user, strlen(user), mac);
	memset(out, 0, sizeof(*out));
	/* what a real user's secret derived by pgtenant looks like */
	out->iterations = SCRAM_DEFAULT_ITER;
	memcpy(out->salt, mac, SCRAM_SALT_LEN);
	out->salt_len = SCRAM_SALT_LEN;
	memcpy(out->stored_key, mock.stored_key, SCRAM_KEY_LEN);
	memcpy(out->server_key, mock.server_key, SCRAM_KEY_LEN);
	return true;
}

/*
 * SaltedPassword cache of the client role.  PostgreSQL answers every login
 * of a role with the same salt and iteration count, so without it each new
 * server connection would pay the same PBKDF2 again.  An entry is found by
 * an HMAC, under a per-process random key, of (password, salt, iterations):
 * the password is not kept, and the tag is no cheaper to attack than the
 * SaltedPassword next to it.  Set-associative with LRU replacement inside a
 * set: fixed memory, a lookup reads at most SALTED_WAYS entries.  Entries for
 * a changed server password are never hit again and age out.
 */
#define SALTED_SETS 64
#define SALTED_WAYS 4

struct salted_entry {
	uint8_t tag[SCRAM_KEY_LEN];
	uint8_t salted[SCRAM_KEY_LEN];
	uint64_t used; /* LRU clock at the last hit; 0 = empty slot */
};

static struct {
	bool ready;
	uint8_t key[SCRAM_KEY_LEN];
	uint64_t clock;
	struct salted_entry sets[SALTED_SETS][SALTED_WAYS];
} salted_cache;

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Lengths are part of the tagged message, so that no two different triples
 * can be spelt with the same bytes. */
static bool salted_tag(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                       uint8_t tag[SCRAM_KEY_LEN])
{
	if (!salted_cache.ready) {
		if (!util_random(salted_cache.key, SCRAM_KEY_LEN))
			return false;
		salted_cache.ready = true;
	}
	size_t pl = strlen(password), n = 12 + pl + salt_len;
	uint8_t *msg = xmalloc(n);
	put_be32(msg, (uint32_t)pl);
	memcpy(msg + 4, password, pl);
	put_be32(msg + 4 + pl, (uint32_t)salt_len);
	memcpy(msg + 8 + pl, salt, salt_len);
	put_be32(msg + 8 + pl + salt_len, (uint32_t)iterations);
	hmac256(salted_cache.key, SCRAM_KEY_LEN, msg, n, tag);
	OPENSSL_cleanse(msg, n);
	free(msg);
	return true;
}

static bool salted_password(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                            uint8_t out[SCRAM_KEY_LEN])
{
	uint8_t tag[SCRAM_KEY_LEN];
	if (!salted_tag(password, salt, salt_len, iterations, tag))
		return pbkdf2(password, salt, salt_len, iterations, out);
	struct salted_entry *set = salted_cache.sets[tag[0] % SALTED_SETS], *victim = &set[0];
	for (int w = 0; w < SALTED_WAYS; w++) {
		struct salted_entry *e = &set[w];
		if (e->used && util_secure_eq(e->tag, tag, SCRAM_KEY_LEN)) {
			e->used = ++salted_cache.clock;
			memcpy(out, e->salted, SCRAM_KEY_LEN);
			return true;
		}
		if (e->used < victim->used)
			victim = e;
	}
	if (!pbkdf2(password, salt, salt_len, iterations, out))
		return false;
	OPENSSL_cleanse(victim, sizeof(*victim));
	memcpy(victim->tag, tag, SCRAM_KEY_LEN);
	memcpy(victim->salted, out, SCRAM_KEY_LEN);
	victim->used = ++salted_cache.clock;
	return true;
}

bool scram_parse_secret(const char *s, struct scram_secret *out)
{
	if (strncmp(s, "SCRAM-SHA-256$", 14) != 0)
		return false;
	s += 14;
	char *end;
	long iter = strtol(s, &end, 10);
	if (end == s || *end != ':' || iter < 1 || iter > 100000000)
		return false;
	s = end + 1;
	const char *dollar = strchr(s, '$');
	if (!dollar)
		return false;
	int n = scram_b64_decode(s, (size_t)(dollar - s), out->salt, sizeof(out->salt));
	if (n <= 0)
		return false;
	out->salt_len = (size_t)n;
	s = dollar + 1;
	const char *colon = strchr(s, ':');
	if (!colon)
		return false;
	if (scram_b64_decode(s, (size_t)(colon - s), out->stored_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN)
		return false;
	s = colon + 1;
	if (scram_b64_decode(s, strlen(s), out->server_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN)
		return false;
	out->iterations = (int)iter;
	return true;
}

/* printable characters except ',' (RFC 5802 "printable") */
static bool nonce_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

static bool random_nonce(char *out, size_t outcap)
{
	uint8_t raw[SCRAM_NONCE_LEN];
	if (outcap < 4 * ((SCRAM_NONCE_LEN + 2) / 3) + 1 || !util_random(raw, sizeof(raw)))
		return false;
	scram_b64_encode(raw, sizeof(raw), out);
	return true;
}

char *scram_server_first(struct scram_server *st, const char *client_first, size_t len,
                         const struct scram_secret *secret, const char *server_nonce, const char **reason)
{
	static const struct scram_cbind none;
	return scram_server_first_cb(st, client_first, len, secret, server_nonce, &none, reason);
}

#define CB_TYPE "tls-server-end-point"

char *scram_server_first_cb(struct scram_server *st, const char *client_first, size_t len,
                            const struct scram_secret *secret, const char *server_nonce,
                            const struct scram_cbind *cb, const char **reason)
{
	memset(st, 0, sizeof(*st));
	st->secret = *secret;
	const char *end = client_first + len;
	/* gs2-header: ("n" | "y" | "p=" cb-name) "," [authzid] "," */
	const char *c1 = len ? memchr(client_first, ',', len) : NULL;
	if (!c1) {
		*reason = "malformed SCRAM client-first-message";
		return NULL;
	}
	size_t flag_len = (size_t)(c1 - client_first);
	char flag = client_first[0];
	if (flag == 'p') {
		if (!cb->plus) {
			*reason = "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM "
			          "message includes channel binding data";
			return NULL;
		}
		if (flag_len != 2 + strlen(CB_TYPE) || memcmp(client_first, "p=" CB_TYPE, flag_len) != 0) {
			*reason = "unsupported SCRAM channel-binding type (only " CB_TYPE ")";
			return NULL;
		}
	} else if ((flag == 'n' || flag == 'y') && flag_len == 1) {
		if (cb->plus) {
			*reason = "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not "
			          "include channel binding data";
			return NULL;
		}
		if (flag == 'y' && cb->offered) {
			/* the client thinks we cannot bind, but we offered to: someone
			 * in the middle removed -PLUS from the list */
			*reason = "SCRAM channel binding negotiation error";
			st->negotiation_error = true;
			return NULL;
		}
	} else {
		*reason = "malformed SCRAM client-first-message";
		return NULL;
	}
	const char *p = c1 + 1;
	if (p < end && *p == 'a') {
		*reason = "authorization identity is not supported";
		return NULL;
	}
	if (p >= end || *p != ',') {
		*reason = "malformed SCRAM client-first-message";
		return NULL;
	}
	p++;
	size_t gs2_len = (size_t)(p - client_first);
	memcpy(st->gs2, client_first, gs2_len);
	st->gs2_len = (uint8_t)gs2_len;
	if (flag == 'p') {
		memcpy(st->cbind, cb->data, cb->len);
		st->cbind_len = (uint8_t)cb->len;
	}
	const char *bare = p;
	/* n=<user>,r=<nonce>[,extensions] ; the user name is ignored, as PostgreSQL does */
	if (end - p < 2 || p[0] != 'n' || p[1] != '=') {
		*reason = "malformed SCRAM client-first-message";
		return NULL;
	}
	const char *comma = memchr(p, ',', (size_t)(end - p));
	if (!comma || end - comma < 4 || comma[1] != 'r' || comma[2] != '=') {
		*reason = "malformed SCRAM client-first-message";
		return NULL;
	}
	const char *cnonce = comma + 3;
	const char *cn_end = memchr(cnonce, ',', (size_t)(end - cnonce));
	if (!cn_end)
		cn_end = end;
	if (!nonce_ok(cnonce, (size_t)(cn_end - cnonce)) || cn_end - cnonce > 512) {
		*reason = "malformed SCRAM nonce";
		return NULL;
	}
	char snonce[64];
	char salt64[96];
	if (server_nonce)
		snprintf(snonce, sizeof(snonce), "%s", server_nonce);
	else if (!random_nonce(snonce, sizeof(snonce))) {
		*reason = "could not generate a nonce";
		return NULL;
	}
	scram_b64_encode(st->secret.salt, st->secret.salt_len, salt64);
	st->client_first_bare = xstrndup(bare, (size_t)(end - bare));
	st->nonce = xasprintf("%.*s%s", (int)(cn_end - cnonce), cnonce, snonce);
	st->server_first = xasprintf("r=%s,s=%s,i=%d", st->nonce, salt64, st->secret.iterations);
	return xstrdup(st->server_first);
}

char *scram_server_final(struct scram_server *st, const char *client_final, size_t len,
                         uint8_t client_key[SCRAM_KEY_LEN], const char **reason)
{
	/* c=<b64 gs2>,r=<nonce>,p=<proof> */
	const char *end = client_final + len;
	const char *proof_attr = NULL;
	for (const char *q = end - 1; q > client_final; q--) {
		if (*q == ',' && q + 3 <= end && q[1] == 'p' && q[2] == '=') {
			proof_attr = q;
			break;
		}
	}
	/* c= is the gs2 header, and with -PLUS the channel binding data */
	uint8_t cbuf[sizeof(st->gs2) + sizeof(st->cbind)];
	char expect_c[4 * (sizeof(cbuf) + 2) / 3 + 4];
	memcpy(cbuf, st->gs2, st->gs2_len);
	memcpy(cbuf + st->gs2_len, st->cbind, st->cbind_len);
	scram_b64_encode(cbuf, (size_t)st->gs2_len + st->cbind_len, expect_c);
	size_t nlen = strlen(st->nonce);
	if (!proof_attr) {
		*reason = "malformed SCRAM client-final-message";
		return NULL;
	}
	size_t without_proof = (size_t)(proof_attr - client_final);
	char *expect_prefix = xasprintf("c=%s,r=%s", expect_c, st->nonce);
	bool prefix_ok =
	    without_proof == strlen(expect_prefix) && memcmp(client_final, expect_prefix, without_proof) == 0;
	free(expect_prefix);
	(void)nlen;
	if (!prefix_ok) {
		*reason = "SCRAM channel binding or nonce mismatch";
		return NULL;
	}
	uint8_t proof[SCRAM_KEY_LEN];
	const char *p64 = proof_attr + 3;
	if (scram_b64_decode(p64, (size_t)(end - p64), proof, sizeof(proof)) != SCRAM_KEY_LEN) {
		*reason = "malformed SCRAM proof";
		return NULL;
	}
	char *auth_msg = xasprintf("%s,%s,%.*s", st->client_first_bare, st->server_first, (int)without_proof,
	                           client_final);
	uint8_t sig[SCRAM_KEY_LEN], ck[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	hmac256(st->secret.stored_key, SCRAM_KEY_LEN, auth_msg, strlen(auth_msg), sig);
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		ck[i] = proof[i] ^ sig[i];
	sha256(ck, SCRAM_KEY_LEN, stored);
	if (!util_secure_eq(stored, st->secret.stored_key, SCRAM_KEY_LEN)) {
		free(auth_msg);
		*reason = "password does not match";
		return NULL;
	}
	if (client_key)
		memcpy(client_key, ck, SCRAM_KEY_LEN);
	OPENSSL_cleanse(ck, sizeof(ck));
	uint8_t ssig[SCRAM_KEY_LEN];
	hmac256(st->secret.server_key, SCRAM_KEY_LEN, auth_msg, strlen(auth_msg), ssig);
	free(auth_msg);
	char v64[64];
	scram_b64_encode(ssig, SCRAM_KEY_LEN, v64);
	return xasprintf("v=%s", v64);
}

void scram_server_clear(struct scram_server *st)
{
	free(st->client_first_bare);
	free(st->server_first);
	free(st->nonce);
	memset(st, 0, sizeof(*st));
}

char *scram_client_first(struct scram_client *st, const char *user, const char *nonce)
{
	memset(st, 0, sizeof(*st));
	if (nonce)
		snprintf(st->nonce, sizeof(st->nonce), "%s", nonce);
	else if (!random_nonce(st->nonce, sizeof(st->nonce)))
		return NULL;
	st->client_first_bare = xasprintf("n=%s,r=%s", user, st->nonce);
	return xasprintf("n,,%s", st->client_first_bare);
}

/* server-first's nonce, salt and iteration count; false with *reason. */
struct server_first {
	char *copy; /* what r points into */
	const char *r;
	uint8_t salt[64];
	int salt_len;
	long iter;
};

static bool parse_server_first(struct scram_client *st, const char *server_first, size_t len,
                               struct server_first *sf, const char **reason)
{
	sf->copy = xstrndup(server_first, len);
	char *r = NULL, *s = NULL, *i = NULL;
	for (char *save = NULL, *tok = strtok_r(sf->copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (tok[0] == 'r' && tok[1] == '=')
			r = tok + 2;
		else if (tok[0] == 's' && tok[1] == '=')
			s = tok + 2;
		else if (tok[0] == 'i' && tok[1] == '=')
			i = tok + 2;
	}
	if (!r || !s || !i || strncmp(r, st->nonce, strlen(st->nonce)) != 0 ||
	    strlen(r) <= strlen(st->nonce)) {
		*reason = "invalid SCRAM server-first-message";
		return false;
	}
	sf->r = r;
	sf->salt_len = scram_b64_decode(s, strlen(s), sf->salt, sizeof(sf->salt));
	if (sf->salt_len <= 0 || !util_parse_int(i, 1, 100000000, &sf->iter)) {
		*reason = "invalid SCRAM salt or iteration count";
		return false;
	}
	return true;
}

/* client-final from the ClientKey (the proof) and the ServerKey (kept to
 * check the server's signature). */
static char *client_final_from_keys(struct scram_client *st, const uint8_t client_key[SCRAM_KEY_LEN],
                                    const uint8_t server_key[SCRAM_KEY_LEN], const char *server_first,
                                    size_t len, const char *r)
{
	uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	memcpy(st->server_key, server_key, SCRAM_KEY_LEN);
	sha256(client_key, SCRAM_KEY_LEN, stored);
	char *without_proof = xasprintf("c=biws,r=%s", r);
	free(st->auth_message);
	st->auth_message =
	    xasprintf("%s,%.*s,%s", st->client_first_bare, (int)len, server_first, without_proof);
	hmac256(stored, SCRAM_KEY_LEN, st->auth_message, strlen(st->auth_message), sig);
	for (int k = 0; k < SCRAM_KEY_LEN; k++)
		proof[k] = client_key[k] ^ sig[k];
	char p64[64];
	scram_b64_encode(proof, SCRAM_KEY_LEN, p64);
	char *out = xasprintf("%s,p=%s", without_proof, p64);
	free(without_proof);
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(proof, sizeof(proof));
	return out;
}

char *scram_client_final(struct scram_client *st, const char *password, const char *server_first, size_t len,
                         const char **reason)
{
	struct server_first sf;
	char *out = NULL;
	if (!parse_server_first(st, server_first, len, &sf, reason))
		goto done;
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	if (!salted_password(password, sf.salt, (size_t)sf.salt_len, (int)sf.iter, salted)) {
		*reason = "PBKDF2 failed";
		goto done;
	}
	hmac256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key);
	hmac256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
	out = client_final_from_keys(st, client_key, server_key, server_first, len, sf.r);
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(server_key, sizeof(server_key));
done:
	free(sf.copy);
	return out;
}

char *scram_client_final_passthrough(struct scram_client *st, const struct scram_secret *secret,
                                     const uint8_t client_key[SCRAM_KEY_LEN], const char *server_first,
                                     size_t len, const char **reason)
{
	struct server_first sf;
	char *out = NULL;
	if (!parse_server_first(st, server_first, len, &sf, reason))
		goto done;
	/* the keys belong to one salt and iteration count: the server must
	 * still hold the secret they were derived for */
	if ((size_t)sf.salt_len != secret->salt_len || memcmp(sf.salt, secret->salt, secret->salt_len) != 0 ||
	    sf.iter != secret->iterations) {
		*reason = "the server's SCRAM secret is not the one auth_query returned";
		goto done;
	}
	out = client_final_from_keys(st, client_key, secret->server_key, server_first, len, sf.r);
done:
	free(sf.copy);
	return out;
}

bool scram_client_verify(struct scram_client *st, const char *server_final, size_t len)
{
	if (!st->auth_message || len < 3 || server_final[0] != 'v' || server_final[1] != '=')
		return false;
	uint8_t got[SCRAM_KEY_LEN], want[SCRAM_KEY_LEN];
	const char *v = server_final + 2;
	size_t vlen = len - 2;
	const char *comma = memchr(v, ',', vlen);
	if (comma)
		vlen = (size_t)(comma - v);
	if (scram_b64_decode(v, vlen, got, sizeof(got)) != SCRAM_KEY_LEN)
		return false;
	hmac256(st->server_key, SCRAM_KEY_LEN, st->auth_message, strlen(st->auth_message), want);
	return util_secure_eq(got, want, SCRAM_KEY_LEN);
}

void scram_client_clear(struct scram_client *st)
{
	free(st->client_first_bare);
	free(st->auth_message);
	memset(st, 0, sizeof(*st));
}

static void md5_hex(const void *data, size_t n, char out[33])
{
	uint8_t d[16];
	unsigned int dl = sizeof(d);
	EVP_Digest(data, n, d, &dl, EVP_md5(), NULL);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

void pg_md5_hash(const char *password, const char *user, char out[36])
{
	size_t pl = strlen(password), ul = strlen(user);
	char *buf = xmalloc(pl + ul);
	memcpy(buf, password, pl);
	memcpy(buf + pl, user, ul);
	memcpy(out, "md5", 3);
	md5_hex(buf, pl + ul, out + 3);
	memset(buf, 0, pl + ul);
	free(buf);
}

void pg_md5_salted(const char *md5hash, const uint8_t salt[4], char out[36])
{
	uint8_t buf[36];
	memcpy(buf, md5hash + 3, 32);
	memcpy(buf + 32, salt, 4);
	memcpy(out, "md5", 3);
	md5_hex(buf, 36, out + 3);
}
