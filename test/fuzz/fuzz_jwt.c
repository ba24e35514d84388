/*
 * fuzz_jwt: JSON Web Tokens offered as passwords and JWKS documents.  Keys
 * are set up once (LLVMFuzzerInitialize: an HMAC secret and an EC P-256
 * public key in files, a config naming them).  The first byte picks:
 *   0  the rest as a token: jwt_verify (segments, base64url, header JSON,
 *      algorithm and key choice, signature);
 *   1  the rest as header JSON '\0' payload JSON, signed here with the
 *      HMAC secret: a valid signature, so the claim checks (exp, nbf, iat,
 *      iss, aud, the tenant and user claim paths) see every payload;
 *   2  the rest as a JWKS document (jwt_set_jwks, for one issuer when bit 2
 *      of the first byte is set, else for any),
 *      then a token verified against it, and the set dropped again;
 *   3  jwt_user_map '\0' claim value through jwt_map_user.
 * The clock is fixed, so an input does the same thing every time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "config.h"
#include "fuzz_util.h"
#include "jwt.h"

#define NOW 1700000000 /* 2023-11-14 */

static struct pgt_config *cfg;
static const char secret[] = "0123456789abcdef0123456789abcdef-fuzz-secret";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char dir[] = "/tmp/pgt-fuzz-jwt-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	char keys[64], sec[64];
	snprintf(keys, sizeof(keys), "%s/keys.pem", dir);
	snprintf(sec, sizeof(sec), "%s/secret", dir);
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	FILE *f = fopen(keys, "w");
	if (!ec || !f)
		abort();
	PEM_write_PUBKEY(f, ec);
	fclose(f);
	EVP_PKEY_free(ec);
	f = fopen(sec, "w");
	if (!f)
		abort();
	fprintf(f, "%s\n", secret);
	fclose(f);
	char ini[1024];
	int n =
	    snprintf(ini, sizeof(ini),
	             "[pgtenant]\nauth_type = jwt\njwt_key_file = %s\njwt_secret_file = %s\n"
	             "jwt_algorithms = ES256, RS256, HS256\njwt_issuer = https://issuer.example, https://b\n"
	             "jwt_audience = app1\njwt_tenant_claim = app_metadata.tenant\njwt_user_claim = sub\n",
	             keys, sec);
	cfg = fuzz_config_load(ini, (size_t)n);
	char err[256];
	if (!cfg || !jwt_configure(cfg, true, err, sizeof(err)))
		abort();
	unlink(keys);
	unlink(sec);
	rmdir(dir);
	return 0;
}

static size_t b64url(const uint8_t *in, size_t n, char *out)
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
	return o;
}

static void verify(const char *tok, size_t n)
{
	struct jwt_result r;
	memset(&r, 0, sizeof(r));
	enum jwt_reason why = jwt_verify(cfg, tok, n, NOW, &r);
	if ((unsigned)why >= JWT_REASON_COUNT || !jwt_reason_text(why) || !jwt_reason_label(why))
		abort();
	if (why == JWT_OK && (strnlen(r.tenant, sizeof(r.tenant)) == sizeof(r.tenant) ||
	                      strnlen(r.user, sizeof(r.user)) == sizeof(r.user) ||
	                      strnlen(r.iss, sizeof(r.iss)) == sizeof(r.iss) ||
	                      strnlen(r.sub, sizeof(r.sub)) == sizeof(r.sub)))
		abort(); /* claims are cut to fit, terminated */
}

/* header.payload signed with HS256 and verified */
static void signed_token(const uint8_t *h, size_t hl, const uint8_t *p, size_t pl)
{
	if (hl + pl > JWT_MAX_TOKEN)
		return;
	char *tok = malloc((hl + pl) * 4 / 3 + 128);
	if (!tok)
		abort();
	size_t n = b64url(h, hl, tok);
	tok[n++] = '.';
	n += b64url(p, pl, tok + n);
	uint8_t mac[64];
	size_t ml = 0;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret), (uint8_t *)tok, n, mac,
	               sizeof(mac), &ml))
		abort();
	tok[n++] = '.';
	n += b64url(mac, ml, tok + n);
	/* exactly n bytes: no terminator to lean on */
	char *exact = malloc(n);
	if (!exact)
		abort();
	memcpy(exact, tok, n);
	verify(exact, n);
	free(exact);
	free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *p = data + 1, *end = data + size, *a;
	switch (data[0] & 3) {
	case 0:
		verify((const char *)data + 1, size - 1);
		break;
	case 1: {
		size_t al = fuzz_field(&p, end, '\0', &a);
		size_t bl = (size_t)(end - p);
		signed_token(a, al, p, bl);
		break;
	}
	case 2: {
		char err[256];
		const char *iss = data[0] & 4 ? "https://issuer.example" : NULL;
		if (!jwt_set_jwks(0, iss, (const char *)data + 1, size - 1, err, sizeof(err)) && !err[0])
			abort(); /* a refusal says why */
		static const char hdr[] = "{\"alg\":\"HS256\",\"kid\":\"k1\"}";
		static const char pl[] =
		    "{\"iss\":\"https://issuer.example\",\"aud\":\"app1\",\"exp\":1800000000,"
		    "\"sub\":\"app\",\"app_metadata\":{\"tenant\":\"acme\"}}";
		signed_token((const uint8_t *)hdr, sizeof(hdr) - 1, (const uint8_t *)pl, sizeof(pl) - 1);
		(void)jwt_set_jwks(-1, NULL, NULL, 0, err, sizeof(err));
		break;
	}
	default: {
		size_t al = fuzz_field(&p, end, '\0', &a);
		char *map = fuzz_strndup(a, al);
		char *value = fuzz_strndup(p, (size_t)(end - p));
		char out[64];
		const char *u = jwt_map_user(map, value, out, sizeof(out));
		if (u && strnlen(u, sizeof(out)) == sizeof(out))
			abort();
		free(map);
		free(value);
		break;
	}
	}
	return 0;
}
