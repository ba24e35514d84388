/*
 * Client authentication (trust, md5, scram-sha-256) against auth_file, and
 * the choice of method per user, as PgBouncer does: a user whose stored
 * password is an md5 hash can only do md5; a SCRAM secret can only do SCRAM.
 * A failed authentication is answered after auth_failure_delay, growing with
 * the failures of the client's address (addrstate.h).  auth_type jwt asks
 * for a cleartext password and verifies it as a token (jwt.h).  A user not
 * in auth_file may be looked up with auth_query (authquery.h).
 */
#ifndef PGT_AUTH_H
#define PGT_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event_struct.h>

#include "authquery.h"
#include "jwks.h"
#include "scram.h"

struct pgt_client;
struct pgt_pkt;

enum auth_step {
	AUTH_NONE,
	AUTH_MD5_WAIT,
	AUTH_SCRAM_INIT_WAIT,
	AUTH_SCRAM_FINAL_WAIT,
	AUTH_JWT_WAIT,   /* asked for a cleartext password that is a JWT (jwt.h) */
	AUTH_JWT_KEYS,   /* its key is unknown: waiting for jwt_jwks_url to be fetched again */
	AUTH_QUERY_WAIT, /* waiting for auth_query's answer (authquery.h) */
	AUTH_FAILED,     /* failed; the 28P01 waits for fail_timer, input is ignored */
	AUTH_DONE
};

struct auth_state {
	enum auth_step step;
	uint8_t md5_salt[4];
	char *stored; /* copy of the user's auth_file password (NULL = unknown user) */
	struct scram_server scram;
	bool plus_offered;         /* SCRAM-SHA-256-PLUS was offered (TLS) */
	char *fail_msg;            /* the refusal's message when it is not a bad password */
	struct jwks_waiter jwks;   /* AUTH_JWT_KEYS */
	struct authq_waiter authq; /* AUTH_QUERY_WAIT */
	bool from_query;           /* stored is auth_query's answer (authquery.h) */
	char *token;               /* ... the token, verified again once the keys are in */
	struct pgt_client *client; /* whose state this is */
	/* Delays the answer to a failed authentication, so that guessing from
	 * one address slows down; a timer, not a sleep, as the loop is shared. */
	struct event *fail_timer; /* allocated on a failure only: logins that succeed do not pay for it */
	struct pgt_client *fail_client; /* whom fail_timer answers */
};

/* Start authenticating c; returns false if c was closed. */
bool auth_start(struct pgt_client *c, struct auth_state *st);
/* A PasswordMessage/SASL response arrived; returns false if c was closed.
 * Sets st->step = AUTH_DONE on success, AUTH_FAILED while a failure waits
 * for its delayed answer (c stays open until then). */
bool auth_message(struct pgt_client *c, struct auth_state *st, const uint8_t *body, uint32_t len);
/* A JWT login's password message was too large to read: refuse it (false
 * if c was closed). */
bool auth_jwt_too_large(struct pgt_client *c, struct auth_state *st);
/* Free what st holds and disarm a pending failure answer; idempotent. */
void auth_clear(struct auth_state *st);

#endif
