/*
 * Client authentication (trust, md5, scram-sha-256) against auth_file, and
 * the choice of method per user, as PgBouncer does: a user whose stored
 * password is an md5 hash can only do md5; a SCRAM secret can only do SCRAM.
 */
#ifndef PGT_AUTH_H
#define PGT_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "scram.h"

struct pgt_client;
struct pgt_pkt;

enum auth_step { AUTH_NONE, AUTH_MD5_WAIT, AUTH_SCRAM_INIT_WAIT, AUTH_SCRAM_FINAL_WAIT, AUTH_DONE };

struct auth_state {
	enum auth_step step;
	uint8_t md5_salt[4];
	char *stored; /* copy of the user's auth_file password (NULL = unknown user) */
	struct scram_server scram;
};

/* Start authenticating c; returns false if c was closed. */
bool auth_start(struct pgt_client *c, struct auth_state *st);
/* A PasswordMessage/SASL response arrived; returns false if c was closed.
 * Sets st->step = AUTH_DONE on success. */
bool auth_message(struct pgt_client *c, struct auth_state *st, const uint8_t *body, uint32_t len);
void auth_clear(struct auth_state *st);

#endif
