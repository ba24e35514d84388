/*
 * Verifying JSON Web Tokens (compact JWS) offered as passwords: the
 * signature with OpenSSL EVP only, the JSON with jansson, then the
 * registered claims (exp, nbf, iat, iss, aud) and the claims that name the
 * tenant and the user.
 *
 * Keys come from jwt_key_file (a JWKS document, or PEM public keys) and
 * jwt_secret_file (the HMAC secret), loaded whole at startup and on RELOAD;
 * a reload whose files do not load keeps the previous keys.  A key is
 * bound to its type (and to its "alg" when the JWKS names one): a public
 * key is never used as an HMAC secret, and "none" is never accepted.
 */
#ifndef PGT_JWT_H
#define PGT_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgt_config;

#define JWT_MAX_TOKEN 16384

enum jwt_reason {
	JWT_OK = 0,
	JWT_TOO_LARGE,
	JWT_MALFORMED,
	JWT_ALG_NONE,
	JWT_ALG_NOT_ALLOWED,
	JWT_UNKNOWN_KEY,
	JWT_BAD_SIGNATURE,
	JWT_MISSING_EXP,
	JWT_EXPIRED,
	JWT_NOT_YET_VALID,
	JWT_ISSUED_IN_FUTURE,
	JWT_WRONG_ISSUER,
	JWT_WRONG_AUDIENCE,
	JWT_MISSING_TENANT,
	JWT_ISSUER_NOT_ALLOWED,
	JWT_USER_MISMATCH,
	JWT_KEY_OF_OTHER_ISSUER, /* its kid is a key of another issuer's jwt_jwks_url */
	JWT_REASON_COUNT
};

/* What a valid token says (strings are NUL-terminated, cut to fit: a cut
 * value never matches a tenant id or a user name). */
struct jwt_result {
	bool has_tenant, has_user;
	char tenant[128];
	char user[128];
	char iss[256];
	char sub[128];
	int64_t exp;
};

/* Refusals per reason (for /metrics). */
extern uint64_t jwt_refusals[JWT_REASON_COUNT];

/* Load the keys cfg names; install: make them the ones in use.  false with
 * a message when a file does not load.  Nothing to load is success. */
bool jwt_configure(const struct pgt_config *cfg, bool install, char *err, size_t errlen);
void jwt_shutdown(void);

/* The key set fetched from the idx-th jwt_jwks_url (jwks.h), used beside
 * the file's; issuer: the one issuer its keys may sign for (NULL = any);
 * idx -1 drops every set.  false with a message (the previous set stays)
 * when it is not a usable JWKS document. */
bool jwt_set_jwks(int idx, const char *issuer, const char *json, size_t len, char *err, size_t errlen);
/* Called by the janitor: once a second, re-read the key and secret files
 * when they changed (in place, or replaced by a rename as a mounted
 * secret is), so that a rotated key needs no RELOAD. */
void jwt_watch(const struct pgt_config *cfg, uint64_t now_usec);

/* Verify token against the keys in use and cfg's claim rules at time now
 * (seconds since the epoch).  JWT_OK fills out. */
enum jwt_reason jwt_verify(const struct pgt_config *cfg, const char *token, size_t len, int64_t now,
                           struct jwt_result *out);

/* "expired", "bad signature", ... as the refusal says it; and with '_' for
 * metric labels. */
const char *jwt_reason_text(enum jwt_reason r);
const char *jwt_reason_label(enum jwt_reason r);

/* jwt_user_map ("claim value=server user, *=default") applied to value;
 * NULL when nothing matches.  Writes into out. */
const char *jwt_map_user(const char *map, const char *value, char *out, size_t outlen);

#endif
