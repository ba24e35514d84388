/*
 * auth_user / auth_query / auth_dbname, as PgBouncer has them: a user who is
 * not in auth_file is looked up with auth_query, its name bound as $1 (never
 * spliced into the SQL), on pgtenant's own server connection of auth_user to
 * auth_dbname (or to the database the client asked for).  The lookup is
 * asynchronous: the client waits in its login, nobody else does.  Answers are
 * cached for auth_query_cache_ttl per (lookup database, user); a password
 * that does not match a cached secret drops it, so that a changed password
 * is seen at the next attempt.
 *
 * The secret found (an md5 hash or a SCRAM secret) is what the client is
 * verified against and what pgtenant logs in to the server with: the md5
 * hash directly, and for a SCRAM secret the ClientKey recovered from the
 * client's own proof (ClientProof XOR HMAC(StoredKey, AuthMessage), checked
 * against StoredKey), PgBouncer's SCRAM pass-through.  No plain password
 * has to be stored anywhere; until a client has logged in by SCRAM, the
 * server cannot be logged in to as that user.
 */
#ifndef PGT_AUTHQUERY_H
#define PGT_AUTHQUERY_H

#include <stdbool.h>
#include <stdint.h>

#include "sbuf.h"
#include "scram.h"

struct pgt_database;
struct pgt_pool;
struct pgt_server;
struct pgt_pkt;
struct authq_entry;

/* A login waiting for an answer (embedded in its auth_state). */
struct authq_waiter {
	struct authq_waiter *next;
	struct authq_entry *entry;
	/* error: the lookup failed; else secret, NULL = no such user */
	void (*done)(struct authq_waiter *w, const char *error, const char *secret);
};

/* What a server login as a looked-up user uses. */
struct authq_creds {
	char *password;   /* an md5 hash or a plain password (malloc'd), or NULL */
	bool passthrough; /* a SCRAM secret and the ClientKey of a client's proof */
	struct scram_secret secret;
	uint8_t client_key[SCRAM_KEY_LEN];
};

extern uint64_t authq_lookups, authq_failures;

/* Does a login as user to db go through auth_query (db has an auth_user
 * and user is not in auth_file)? */
bool authq_applies(const struct pgt_database *db, const char *user);
/* The cached secret of user for a login to (db, dbname): 1 with *secret
 * when a fresh one is cached; 0 when a lookup was started or joined and
 * w->done will be called; -1 when auth_dbname names no database entry. */
int authq_secret(const struct pgt_database *db, const char *dbname, const char *user, struct authq_waiter *w,
                 const char **secret);
/* w's login went away. */
void authq_unwait(struct authq_waiter *w);
/* A client proved it holds the secret's keys (SCRAM): remember the
 * ClientKey for server logins as user. */
void authq_client_key(const struct pgt_database *db, const char *dbname, const char *user, const char *secret,
                      const uint8_t client_key[SCRAM_KEY_LEN]);
/* A password did not match the cached secret: look it up again next time. */
void authq_forget(const struct pgt_database *db, const char *dbname, const char *user);
/* Credentials for a server login of pool as a looked-up user; false when
 * there are none (the user is not a looked-up one). */
bool authq_server_creds(const struct pgt_pool *pool, struct authq_creds *out);

/* Drop every cached answer (RELOAD may change auth_query); the ClientKeys
 * stay, as they are tied to the secret, not to the query. */
void authq_config_changed(void);
void authq_shutdown(void);

#endif
