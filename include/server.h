/*
 * The server side: connecting (with evdns for names), logging in to
 * PostgreSQL (cleartext, md5, SCRAM-SHA-256), tracking transaction state and
 * ParameterStatus, resetting, and server_fail(), the one exit door for a
 * server connection.
 */
#ifndef PGT_SERVER_H
#define PGT_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "sbuf.h"
#include "util.h"
#include "varcache.h"

struct pgt_pool;
struct pgt_client;
struct server_login;
struct registry_lookup;

enum server_state {
	SV_LOGIN,  /* connecting / authenticating */
	SV_IDLE,   /* ready, in the pool */
	SV_ACTIVE, /* linked to a client */
	SV_USED,   /* running server_reset_query before going idle */
	SV_DEAD,
};

struct pgt_server {
	struct pgt_conn conn;      /* first */
	struct list node;          /* on the list of its state */
	struct list conn_all_node; /* on the global server list (SHOW SERVERS) */
	enum server_state state;
	struct pgt_pool *pool;
	struct pgt_client *client;
	struct server_login *login;
	struct pgt_vars vars; /* values the server has now */
	uint64_t synced_hash; /* vars.hash of the client set it matches ... */
	bool synced;          /* ... if true (false: compare one by one) */
	uint32_t be_pid, be_key;
	uint32_t generation; /* pool generation at connect time */
	char txn;            /* last ReadyForQuery status: 'I', 'T', 'E' */
	uint16_t expect_rfq; /* client Query/Sync/FunctionCall not yet answered */
	uint8_t own_rfq;     /* ReadyForQuery of pgtenant's own queries still to swallow */
	bool sent_since_rfq; /* client bytes went in since the last ReadyForQuery */
	bool close_needed;
	bool pin_dirty;
	struct registry_lookup *lookup;
	/* running tenant_query for the registry */ /* the client may have changed a pinned setting: RESET before reuse */
	char *setup_error; /* error from pgtenant's own SET, reported to the client */
	char setup_sqlstate[6];
	usec_t idle_since;
	usec_t query_start;
};

extern struct list pgt_all_servers;

/* Open a new server connection for the pool. */
void server_launch(struct pgt_pool *pool);
/* Link to a client: sync session parameters, then forward. */
bool server_link(struct pgt_server *s, struct pgt_client *c) _MUSTCHECK;
/* The client is done with it (transaction end or client gone). */
void server_release(struct pgt_server *s);
void server_fail(struct pgt_server *s, const char *fmt, ...) PGT_PRINTF(2, 3);
/* Close without blaming anyone (timeouts, lifetime, admin). */
void server_close(struct pgt_server *s, const char *reason);
void server_log(const struct pgt_server *s, int level, const char *fmt, ...) PGT_PRINTF(3, 4);
/* The startup `options` that pin a tenant pool's server connections:
 * -c search_path=... [-c <tenant_setting>=<id>] [-c statement_timeout=...] */
bool server_pin_options(const struct pgt_pool *pool, char *out, size_t outlen);
/* Send a CancelRequest for s's backend on a new connection. */
void server_cancel(struct pgt_server *s);
void server_free_dead(void);
const char *server_state_name(const struct pgt_server *s);

#endif
