/*
 * RDS IAM authentication tokens (see rdstoken.h), as botocore makes them
 * (botocore/signers.py generate_db_auth_token, botocore/auth.py
 * SigV4QueryAuth):
 *
 *  - the URL is https://HOST:PORT/ with the operation parameters first
 *    (Action, DBUser), then the signing ones in botocore's order
 *    (X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders,
 *    -Security-Token), then X-Amz-Signature; keys and values are
 *    percent-encoded as Python's quote(safe='-_.~') on their UTF-8 bytes:
 *    everything but A-Z a-z 0-9 - _ . ~ becomes %XX (upper-case hex);
 *  - the canonical query string is the same pairs sorted by encoded key
 *    (the keys are fixed, so the order is too: X-Amz-Security-Token sorts
 *    before X-Amz-SignedHeaders);
 *  - the one signed header is host: the host name lower-cased, with
 *    ":PORT" unless the port is 443 (https' default), while the URL keeps
 *    the host as written and always has the port;
 *  - the payload hash is that of the empty body.
 *
 * Memory that held the secret key, the session token or a token is
 * cleansed before it is freed.
 */
#include "rdstoken.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SHA256_LEN 32
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* A growing string; every buffer it drops is cleansed first. */
struct sbuild {
	char *p;
	size_t n, cap;
	bool bad;
};

static void sb_reserve(struct sbuild *b, size_t more)
{
	if (b->bad || b->n + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->n + more + 1)
		cap *= 2;
	char *np = malloc(cap);
	if (!np) {
		b->bad = true;
		return;
	}
	if (b->p) {
		memcpy(np, b->p, b->n + 1);
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	b->p = np;
	b->cap = cap;
}

static void sb_putn(struct sbuild *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	if (b->bad)
		return;
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void sb_put(struct sbuild *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

/* s percent-encoded as botocore's percent_encode (quote, safe '-_.~') */
static void sb_put_enc(struct sbuild *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
		if (isalnum(*q) && *q < 0x80) {
			sb_putn(b, (const char *)q, 1);
		} else if (*q == '-' || *q == '_' || *q == '.' || *q == '~') {
			sb_putn(b, (const char *)q, 1);
		} else {
			char e[3] = {'%', hex[*q >> 4], hex[*q & 15]};
			sb_putn(b, e, 3);
		}
	}
}

static void sb_clear(struct sbuild *b)
{
	if (b->p) {
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	memset(b, 0, sizeof(*b));
}

void rdstoken_free(char *token)
{
	if (!token)
		return;
	OPENSSL_cleanse(token, strlen(token));
	free(token);
}

static bool hmac(const void *key, size_t keylen, const char *msg, uint8_t out[SHA256_LEN])
{
	unsigned int len = 0;
	return HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &len) &&
	       len == SHA256_LEN;
}

static void to_hex(const uint8_t *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Action=...&X-Amz-Expires=900&X-Amz-SignedHeaders=host, and the security
 * token where it goes: sorted (canonical) or in botocore's URL order. */
static void put_query(struct sbuild *b, const char *user, const char *credential, const char *amzdate,
                      const char *session_token, bool canonical)
{
	sb_put(b, "Action=connect&DBUser=");
	sb_put_enc(b, user);
	sb_put(b, "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
	sb_put_enc(b, credential);
	sb_put(b, "&X-Amz-Date=");
	sb_put(b, amzdate);
	sb_put(b, "&X-Amz-Expires=900");
	if (session_token && canonical) {
		sb_put(b, "&X-Amz-Security-Token=");
		sb_put_enc(b, session_token);
	}
	sb_put(b, "&X-Amz-SignedHeaders=host");
	if (session_token && !canonical) {
		sb_put(b, "&X-Amz-Security-Token=");
		sb_put_enc(b, session_token);
	}
}

char *rdstoken_generate(const char *access_key_id, const char *secret_access_key, const char *session_token,
                        const char *host, int port, const char *region, const char *user, time_t now)
{
	if (!access_key_id || !*access_key_id || !secret_access_key || !*secret_access_key || !host ||
	    !*host || port <= 0 || port > 65535 || !region || !*region || !user || !*user)
		return NULL;
	if (session_token && !*session_token)
		session_token = NULL;
	/* an IPv6 literal goes in brackets, in the URL and the host header */
	bool v6 = strchr(host, ':') && host[0] != '[';
	struct tm tm;
	char amzdate[32], day[16];
	if (!gmtime_r(&now, &tm) || !strftime(amzdate, sizeof(amzdate), "%Y%m%dT%H%M%SZ", &tm))
		return NULL;
	memcpy(day, amzdate, 8);
	day[8] = '\0';

	struct sbuild scope = {0}, creq = {0}, sts = {0}, url = {0}, key = {0};
	char *token = NULL;
	uint8_t k1[SHA256_LEN], k2[SHA256_LEN], digest[SHA256_LEN];
	char hexbuf[2 * SHA256_LEN + 1];

	sb_put(&scope, access_key_id);
	sb_put(&scope, "/");
	sb_put(&scope, day);
	sb_put(&scope, "/");
	sb_put(&scope, region);
	sb_put(&scope, "/rds-db/aws4_request");

	/* canonical request */
	sb_put(&creq, "GET\n/\n");
	put_query(&creq, user, scope.p ? scope.p : "", amzdate, session_token, true);
	sb_put(&creq, "\nhost:");
	if (v6)
		sb_put(&creq, "[");
	size_t hstart = creq.n;
	sb_put(&creq, host);
	if (!creq.bad)
		for (size_t i = hstart; i < creq.n; i++)
			creq.p[i] = (char)tolower((unsigned char)creq.p[i]);
	if (v6)
		sb_put(&creq, "]");
	if (port != 443) {
		char ps[16];
		snprintf(ps, sizeof(ps), ":%d", port);
		sb_put(&creq, ps);
	}
	sb_put(&creq, "\n\nhost\n" EMPTY_SHA256);
	if (creq.bad || scope.bad)
		goto out;
	unsigned int dlen = 0;
	if (!EVP_Digest(creq.p, creq.n, digest, &dlen, EVP_sha256(), NULL) || dlen != SHA256_LEN)
		goto out;
	to_hex(digest, SHA256_LEN, hexbuf);

	/* string to sign */
	sb_put(&sts, "AWS4-HMAC-SHA256\n");
	sb_put(&sts, amzdate);
	sb_put(&sts, "\n");
	sb_put(&sts, day);
	sb_put(&sts, "/");
	sb_put(&sts, region);
	sb_put(&sts, "/rds-db/aws4_request\n");
	sb_put(&sts, hexbuf);

	/* signing key: HMAC chain from "AWS4" + secret */
	sb_put(&key, "AWS4");
	sb_put(&key, secret_access_key);
	if (sts.bad || key.bad || !hmac(key.p, key.n, day, k1) || !hmac(k1, SHA256_LEN, region, k2) ||
	    !hmac(k2, SHA256_LEN, "rds-db", k1) || !hmac(k1, SHA256_LEN, "aws4_request", k2) ||
	    !hmac(k2, SHA256_LEN, sts.p, digest))
		goto out;
	to_hex(digest, SHA256_LEN, hexbuf);

	/* the URL without its scheme */
	if (v6)
		sb_put(&url, "[");
	sb_put(&url, host);
	if (v6)
		sb_put(&url, "]");
	char ps[16];
	snprintf(ps, sizeof(ps), ":%d/?", port);
	sb_put(&url, ps);
	put_query(&url, user, scope.p, amzdate, session_token, false);
	sb_put(&url, "&X-Amz-Signature=");
	sb_put(&url, hexbuf);
	if (!url.bad) {
		token = url.p;
		url.p = NULL;
	}
out:
	sb_clear(&scope);
	sb_clear(&creq);
	sb_clear(&sts);
	sb_clear(&url);
	sb_clear(&key);
	OPENSSL_cleanse(k1, sizeof(k1));
	OPENSSL_cleanse(k2, sizeof(k2));
	OPENSSL_cleanse(digest, sizeof(digest));
	return token;
}

static bool region_valid(const char *s, size_t n)
{
	if (n == 0 || n >= 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

static bool copy_region(const char *s, size_t n, char *out, size_t outlen)
{
	if (!region_valid(s, n) || n >= outlen)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[n] = '\0';
	return true;
}

bool rdstoken_region_from_host(const char *host, char *out, size_t outlen)
{
	static const char *const suffixes[] = {".rds.amazonaws.com", ".rds.amazonaws.com.cn"};
	if (!host)
		return false;
	size_t n = strlen(host);
	if (n && host[n - 1] == '.')
		n--; /* a fully qualified name */
	for (size_t k = 0; k < PGT_ARRAY_SIZE(suffixes); k++) {
		size_t sl = strlen(suffixes[k]);
		if (n <= sl || strncasecmp(host + n - sl, suffixes[k], sl) != 0)
			continue;
		/* the label before the suffix, with at least name.id in front */
		size_t end = n - sl, start = end;
		while (start > 0 && host[start - 1] != '.')
			start--;
		if (start < 2)
			return false;
		return copy_region(host + start, end - start, out, outlen);
	}
	return false;
}

bool rdstoken_region(const char *entry_region, const char *global_region, const char *host, char *out,
                     size_t outlen)
{
	const char *given = entry_region && *entry_region     ? entry_region
	                    : global_region && *global_region ? global_region
	                                                      : NULL;
	if (given)
		return copy_region(given, strlen(given), out, outlen);
	if (rdstoken_region_from_host(host, out, outlen))
		return true;
	const char *env[] = {"AWS_REGION", "AWS_DEFAULT_REGION"};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(env); i++) {
		const char *v = getenv(env[i]);
		if (v && *v)
			return copy_region(v, strlen(v), out, outlen);
	}
	return false;
}
