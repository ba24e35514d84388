/*
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) for both directions: verifying clients
 * (server role) and logging in to PostgreSQL (client role).  As the server,
 * SCRAM-SHA-256-PLUS with tls-server-end-point channel binding (RFC 5929)
 * over TLS; as the client, no channel binding ("n,,").
 * All cryptography is OpenSSL's (EVP digests, HMAC, PBKDF2).
 */
#ifndef PGT_SCRAM_H
#define PGT_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SCRAM_KEY_LEN 32
#define SCRAM_DEFAULT_ITER 4096
#define SCRAM_NONCE_LEN 18 /* raw bytes; base64 makes 24 characters */
#define SCRAM_SALT_LEN 16  /* salts pgtenant makes, as long as PostgreSQL's */

struct scram_secret {
	int iterations;
	uint8_t salt[64];
	size_t salt_len;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

/* Parse "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>". */
bool scram_parse_secret(const char *s, struct scram_secret *out) _MUSTCHECK;
/* SASLprep (RFC 4013) of a password, as PostgreSQL does before it derives
 * SCRAM keys (CREATE ROLE ... PASSWORD, the server's and libpq's logins):
 * an ASCII password is left as is; one that is not valid UTF-8, or that
 * SASLprep refuses (prohibited or unassigned characters, broken bidi, an
 * empty result), is used as its raw bytes.  Returns a malloc'd string. */
char *scram_saslprep(const char *password);
/* Derive a secret from a plain password with the given salt (runs PBKDF2
 * on the SASLprepped password). */
bool scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                                struct scram_secret *out) _MUSTCHECK;
/* The secret of a user that does not exist: no proof matches it, and its salt
 * is derived from the name with a per-process key, so that repeated attempts
 * for one name see one salt, exactly as for a real user.  No PBKDF2. */
bool scram_mock_secret(const char *user, struct scram_secret *out) _MUSTCHECK;
/* How many PBKDF2 computations ran in this process: each is ~1 ms of the one
 * event loop at 4096 iterations, so tests check that caches spare them. */
uint64_t scram_pbkdf2_count(void);

/* Server role: one exchange per client login. */
struct scram_server {
	struct scram_secret secret;
	char *client_first_bare;
	char *server_first;
	char *nonce;  /* client nonce + server nonce */
	char gs2[32]; /* "n,,", "y,," or "p=tls-server-end-point,," */
	uint8_t gs2_len;
	uint8_t cbind_len; /* channel binding data the client must echo (-PLUS) */
	uint8_t cbind[64];
	bool negotiation_error; /* "y" although -PLUS was offered: 28000, not 08P01 */
};

/* Channel binding as the server offers it for one login. */
struct scram_cbind {
	bool offered;        /* SCRAM-SHA-256-PLUS was in the list (TLS) */
	bool plus;           /* the client chose it */
	const uint8_t *data; /* tls-server-end-point hash */
	size_t len;          /* <= 64 */
};
/* Parse the client-first-message and produce server-first-message (malloc'd). */
char *scram_server_first(struct scram_server *st, const char *client_first, size_t len,
                         const struct scram_secret *secret, const char *server_nonce /* NULL = random */,
                         const char **reason);
/* The same with channel binding (cb may be all zero: none offered). */
char *scram_server_first_cb(struct scram_server *st, const char *client_first, size_t len,
                            const struct scram_secret *secret, const char *server_nonce,
                            const struct scram_cbind *cb, const char **reason);
/* Verify the client-final-message; on success return server-final (malloc'd) and
 * put the client's ClientKey in client_key (for a later passthrough login). */
char *scram_server_final(struct scram_server *st, const char *client_final, size_t len,
                         uint8_t client_key[SCRAM_KEY_LEN], const char **reason);
void scram_server_clear(struct scram_server *st);

/* Client role: logging in to PostgreSQL. */
struct scram_client {
	char nonce[64];
	char *client_first_bare;
	char *auth_message;
	uint8_t server_key[SCRAM_KEY_LEN];
};
/* Build client-first-message (malloc'd); nonce NULL = random.  PostgreSQL
 * ignores the SCRAM user name (it has the startup packet's), so pass "". */
char *scram_client_first(struct scram_client *st, const char *user, const char *nonce);
/* Parse server-first and build client-final (malloc'd) from the password.
 * The SaltedPassword is cached per (password, salt, iterations), so PBKDF2
 * runs at the first login with a given server secret only. */
char *scram_client_final(struct scram_client *st, const char *password, const char *server_first, size_t len,
                         const char **reason);
/* The same without the password: from a secret and the ClientKey a client
 * proved (SCRAM pass-through, authquery.h); refused when the server's salt
 * or iteration count is not the secret's. */
char *scram_client_final_passthrough(struct scram_client *st, const struct scram_secret *secret,
                                     const uint8_t client_key[SCRAM_KEY_LEN], const char *server_first,
                                     size_t len, const char **reason);
/* Check the server's signature in server-final. */
bool scram_client_verify(struct scram_client *st, const char *server_final, size_t len);
void scram_client_clear(struct scram_client *st);

/* Helpers (exposed for tests). */
size_t scram_b64_encode(const uint8_t *in, size_t n, char *out);             /* out: 4*ceil(n/3)+1 */
int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap); /* -1 on error */

/* md5 password helpers (PostgreSQL's md5 auth). out: 36 bytes ("md5" + 32 hex + NUL). */
void pg_md5_hash(const char *password, const char *user, char out[36]);
void pg_md5_salted(const char *md5hash /* "md5..." */, const uint8_t salt[4], char out[36]);

#endif
