/*
 * JWT verification without a network: keys made here with OpenSSL (EC
 * P-256 and RSA in a JWKS-free PEM file, an HMAC secret), tokens signed
 * here, then every refusal reason the verifier has, the algorithm
 * confusion an RSA public key used as an HMAC secret would allow, the
 * claim paths, and jwt_user_map.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "config.h"
#include "jwt.h"
#include "tap.h"

static char dir[] = "/tmp/pgt-test-jwt-XXXXXX";
static EVP_PKEY *ec, *rsa;
static const char secret[] = "0123456789abcdef0123456789abcdef-secret";

static void b64url(const uint8_t *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
		             (i + 2 < n ? in[i + 2] : 0);
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = a[v >> 6 & 63];
		if (i + 2 < n)
			out[o++] = a[v & 63];
	}
	out[o] = '\0';
}

/* header.payload.signature, signed with alg (ES256 via key ec, RS256 via
 * rsa, HS256 via mac_key) */
static char *sign(const char *header, const char *payload, const char *alg, const void *mac_key,
                  size_t mac_len)
{
	static char tok[8192];
	char h[2048], p[4096];
	b64url((const uint8_t *)header, strlen(header), h);
	b64url((const uint8_t *)payload, strlen(payload), p);
	snprintf(tok, sizeof(tok), "%s.%s", h, p);
	uint8_t sig[512];
	size_t sl = sizeof(sig);
	if (strcmp(alg, "HS256") == 0) {
		EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, mac_key, mac_len, (uint8_t *)tok, strlen(tok),
		          sig, sizeof(sig), &sl);
	} else {
		EVP_MD_CTX *m = EVP_MD_CTX_new();
		EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, strcmp(alg, "ES256") == 0 ? ec : rsa,
		                      NULL);
		uint8_t der[512];
		size_t dl = sizeof(der);
		EVP_DigestSign(m, der, &dl, (uint8_t *)tok, strlen(tok));
		EVP_MD_CTX_free(m);
		if (strcmp(alg, "ES256") == 0) {
			/* DER to the r||s that JWS carries */
			const uint8_t *q = der;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dl);
			BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
			BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
			ECDSA_SIG_free(es);
			sl = 64;
		} else {
			memcpy(sig, der, dl);
			sl = dl;
		}
	}
	char s64[1024];
	b64url(sig, sl, s64);
	strcat(tok, ".");
	strcat(tok, s64);
	return tok;
}

static struct pgt_config *load(const char *extra)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/pgtenant.ini", dir);
	FILE *f = fopen(path, "w");
	fprintf(f, "[pgtenant]\nauth_type = jwt\njwt_secret_file = %s/secret\n", dir);
	if (!strstr(extra, "jwt_key_file"))
		fprintf(f, "jwt_key_file = %s/keys.pem\n", dir);
	fprintf(f, "%s", extra);
	fclose(f);
	int n = 0;
	return config_load(path, stderr, &n);
}

static enum jwt_reason check(const struct pgt_config *cfg, const char *tok, struct jwt_result *r)
{
	return jwt_verify(cfg, tok, strlen(tok), (int64_t)time(NULL), r);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	char path[256];
	snprintf(path, sizeof(path), "%s/keys.pem", dir);
	FILE *f = fopen(path, "w");
	PEM_write_PUBKEY(f, ec);
	PEM_write_PUBKEY(f, rsa);
	fclose(f);
	snprintf(path, sizeof(path), "%s/secret", dir);
	f = fopen(path, "w");
	fprintf(f, "%s\n", secret);
	fclose(f);

	struct pgt_config *cfg =
	    load("jwt_algorithms = ES256, RS256, HS256\njwt_issuer = https://a, https://b\n"
	         "jwt_audience = app1\njwt_tenant_claim = app_metadata.tenant\n");
	tap_ok(cfg != NULL, "config loads");
	char err[256];
	tap_ok(jwt_configure(cfg, true, err, sizeof(err)), "keys load (%s)", err);

	long now = (long)time(NULL);
	char pl[1024];
	snprintf(pl, sizeof(pl),
	         "{\"iss\":\"https://a\",\"aud\":[\"x\",\"app1\"],\"exp\":%ld,\"sub\":\"u1\","
	         "\"app_metadata\":{\"tenant\":\"acme\"}}",
	         now + 60);
	struct jwt_result r;
	const char *es = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
	tap_ok(check(cfg, sign(es, pl, "ES256", NULL, 0), &r) == JWT_OK && r.has_tenant &&
	           strcmp(r.tenant, "acme") == 0 && strcmp(r.iss, "https://a") == 0,
	       "ES256 token verifies; nested tenant claim read");
	tap_ok(check(cfg, sign("{\"alg\":\"RS256\"}", pl, "RS256", NULL, 0), &r) == JWT_OK,
	       "RS256 token verifies");
	tap_ok(check(cfg, sign("{\"alg\":\"HS256\"}", pl, "HS256", secret, strlen(secret)), &r) == JWT_OK,
	       "HS256 token with the secret file verifies");

	/* tampering */
	/* another tenant's payload under acme's signature */
	char forged[8192], other[1024], p64[2048];
	snprintf(
	    other, sizeof(other),
	    "{\"iss\":\"https://a\",\"aud\":\"app1\",\"exp\":%ld,\"app_metadata\":{\"tenant\":\"globex\"}}",
	    now + 60);
	b64url((const uint8_t *)other, strlen(other), p64);
	char *t = sign(es, pl, "ES256", NULL, 0);
	char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
	snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(d1 - t), t, p64, d2);
	tap_ok(check(cfg, forged, &r) == JWT_BAD_SIGNATURE,
	       "a payload swapped under a signature: bad signature");
	/* the RSA public key (its PEM text) used as an HMAC secret */
	BIO *mem = BIO_new(BIO_s_mem());
	PEM_write_bio_PUBKEY(mem, rsa);
	char *pem;
	long pl_len = BIO_get_mem_data(mem, &pem);
	tap_ok(check(cfg, sign("{\"alg\":\"HS256\"}", pl, "HS256", pem, (size_t)pl_len), &r) ==
	           JWT_BAD_SIGNATURE,
	       "HS256 signed with the RSA public key as secret: refused");
	BIO_free(mem);
	/* alg none, with and without a signature */
	char none[4096], h[256], p[2048];
	b64url((const uint8_t *)"{\"alg\":\"none\"}", 14, h);
	b64url((const uint8_t *)pl, strlen(pl), p);
	snprintf(none, sizeof(none), "%s.%s.", h, p);
	tap_ok(check(cfg, none, &r) == JWT_ALG_NONE, "alg none: refused");
	tap_ok(check(cfg, sign("{\"alg\":\"ES384\"}", pl, "ES256", NULL, 0), &r) == JWT_ALG_NOT_ALLOWED,
	       "an algorithm not in jwt_algorithms: refused");
	tap_ok(check(cfg, sign("{\"alg\":\"ES256\",\"kid\":\"nope\"}", pl, "ES256", NULL, 0), &r) == JWT_OK,
	       "a kid no JWKS key has falls back to the PEM keys");

	/* structure */
	const char *bad[] = {"", "a", "a.b", "a.b.c.d", "..", "e30.e30.", "!!!.e30.AA", "WyJ4Il0.e30.AA"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		tap_ok(check(cfg, bad[i], &r) == JWT_MALFORMED, "\"%s\": malformed", bad[i]);
	char *big = malloc(JWT_MAX_TOKEN + 2);
	memset(big, 'a', JWT_MAX_TOKEN + 1);
	big[JWT_MAX_TOKEN + 1] = '\0';
	tap_ok(check(cfg, big, &r) == JWT_TOO_LARGE, "a token over 16 KB: too large");
	free(big);

	/* claims */
	const struct {
		const char *payload;
		enum jwt_reason want;
		const char *what;
	} cases[] = {
	    {"{\"iss\":\"https://a\",\"aud\":\"app1\"}", JWT_MISSING_EXP, "no exp"},
	    {"{\"iss\":\"https://a\",\"aud\":\"app1\",\"exp\":%ld}", JWT_EXPIRED, "expired"},
	    {"{\"iss\":\"https://c\",\"aud\":\"app1\",\"exp\":%ld}", JWT_WRONG_ISSUER, "wrong issuer"},
	    {"{\"iss\":\"https://a\",\"aud\":\"app2\",\"exp\":%ld}", JWT_WRONG_AUDIENCE, "wrong audience"},
	    {"{\"iss\":\"https://a\",\"client_id\":\"app1\",\"exp\":%ld}", JWT_OK,
	     "Cognito client_id as audience"},
	    {"{\"iss\":\"https://a\",\"aud\":\"app1\",\"exp\":%ld,\"nbf\":%ld}", JWT_NOT_YET_VALID,
	     "not yet valid"},
	    {"{\"iss\":\"https://a\",\"aud\":\"app1\",\"exp\":%ld,\"iat\":%ld}", JWT_ISSUED_IN_FUTURE,
	     "issued in the future"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long exp = cases[i].want == JWT_EXPIRED ? now - 100 : now + 100;
		snprintf(pl, sizeof(pl), cases[i].payload, exp, now + 600);
		tap_ok(check(cfg, sign(es, pl, "ES256", NULL, 0), &r) == cases[i].want, "%s", cases[i].what);
	}
	snprintf(pl, sizeof(pl), "{\"iss\":\"https://a\",\"aud\":\"app1\",\"exp\":%ld,\"nbf\":%ld}",
	         now + 100, now + 10);
	tap_ok(check(cfg, sign(es, pl, "ES256", NULL, 0), &r) == JWT_OK, "nbf within jwt_leeway is fine");

	/* a top-level name with ':' wins over a path */
	struct pgt_config *cfg2 = load("jwt_tenant_claim = custom:tenant_id\n");
	snprintf(pl, sizeof(pl), "{\"exp\":%ld,\"custom:tenant_id\":\"globex\",\"sub\":\"u2\"}", now + 60);
	tap_ok(check(cfg2, sign(es, pl, "ES256", NULL, 0), &r) == JWT_OK && strcmp(r.tenant, "globex") == 0 &&
	           r.has_user && strcmp(r.user, "u2") == 0,
	       "custom:tenant_id and sub read");
	snprintf(pl, sizeof(pl), "{\"exp\":%ld,\"custom:tenant_id\":42}", now + 60);
	tap_ok(check(cfg2, sign(es, pl, "ES256", NULL, 0), &r) == JWT_OK && r.has_tenant &&
	           r.tenant[0] == '\x01',
	       "a tenant claim that is not a string is there, and names no valid tenant");
	snprintf(pl, sizeof(pl), "{\"exp\":%ld,\"nbf\":\"soon\"}", now + 60);
	tap_ok(check(cfg2, sign(es, pl, "ES256", NULL, 0), &r) == JWT_MALFORMED,
	       "an nbf that is not a number: malformed");
	snprintf(pl, sizeof(pl), "{\"exp\":1e300}");
	tap_ok(check(cfg2, sign(es, pl, "ES256", NULL, 0), &r) == JWT_OK && r.exp == INT64_MAX,
	       "a huge exp is clamped");
	snprintf(pl, sizeof(pl),
	         "{\"iss\":\"https://a\",\"exp\":%ld,\"aud\":\"other\",\"client_id\":\"app1\"}", now + 60);
	tap_ok(check(cfg, sign(es, pl, "ES256", NULL, 0), &r) == JWT_WRONG_AUDIENCE,
	       "client_id does not stand in for a wrong aud");
	char *ws = sign(es, pl, "ES256", NULL, 0);
	char spaced[8192];
	snprintf(spaced, sizeof(spaced), " %s", ws);
	tap_ok(check(cfg, spaced, &r) == JWT_MALFORMED, "white space in a segment: malformed");

	char out[64];
	tap_ok(jwt_map_user("analyst=app_ro, *=app", "analyst", out, sizeof(out)) &&
	           strcmp(out, "app_ro") == 0,
	       "jwt_user_map: exact match");
	tap_ok(jwt_map_user("analyst=app_ro, *=app", "someone", out, sizeof(out)) && strcmp(out, "app") == 0,
	       "jwt_user_map: * default");
	tap_ok(!jwt_map_user("analyst=app_ro", "someone", out, sizeof(out)), "jwt_user_map: no match");

	/* a key file that does not load keeps the previous keys */
	struct pgt_config *cfg3 = load("jwt_key_file = /nonexistent/keys.json\n");
	tap_ok(!jwt_configure(cfg3, true, err, sizeof(err)), "a missing key file is an error (%s)", err);
	snprintf(pl, sizeof(pl), "{\"iss\":\"https://a\",\"aud\":\"app1\",\"exp\":%ld}", now + 60);
	tap_ok(check(cfg, sign(es, pl, "ES256", NULL, 0), &r) == JWT_OK,
	       "... and the previous keys stay in use");

	jwt_shutdown();
	config_free(cfg);
	config_free(cfg2);
	config_free(cfg3);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	if (system(path) != 0)
		return 1;
	return tap_done();
}
