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
#include "loop.h"
#include "sbuf.h"
#include "util.h"
#include "varcache.h"

struct pgt_pool;
struct pgt_client;
struct server_login;
struct pgt_lookup;
struct ps_server;

enum server_state {
	SV_LOGIN,  /* connecting / authenticating */
	SV_IDLE,   /* ready, in the pool */
	SV_ACTIVE, /* linked to a client */
	SV_USED,   /* no client, pgtenant still busy with it: session-mode
	            * server_reset_query, or draining what a vanished client left */
	SV_DEAD,
};

struct pgt_server {
	struct pgt_conn conn;      /* first */
	struct list node;          /* on the list of its state */
	struct list conn_all_node; /* on the global server list (SHOW SERVERS) */
	enum server_state state;
	struct pgt_pool *pool;
	struct pgt_client *client;
	/* the client whose transaction ended here last: linked to it again,
	 * the reset may keep the statements on it (server.c) */
	struct pgt_client *affine;
	bool keep_state; /* this link is the affine client's */
	struct server_login *login;
	struct pgt_vars vars; /* reported (ParameterStatus) values the server has now */
	/* the reported settable parameters it was opened with (those of the
	 * client it was opened for): a reset returns to them, so a client with
	 * the same needs no SET after the reset (see the top of server.c) */
	struct pgt_vars base;
	uint32_t be_pid, be_key;
	/* its place in notify.c's table of backend pids */
	struct pgt_server *pid_next;
	bool pid_listed;
	uint32_t generation; /* pool generation at connect time */
	int version_num;     /* server_version as PG_VERSION_NUM (150018), 0 = unknown */
	char txn;            /* last ReadyForQuery status: 'I', 'T', 'E' */
	uint8_t host;        /* index of its host in the entry's hostset (hosts.h) */
	uint8_t role;        /* HOST_ROLE_* it reported at login */
	bool health_check;   /* running server_check_query (SV_USED) */
	uint16_t expect_rfq; /* client Query/Sync/FunctionCall not yet answered */
	uint8_t own_rfq;     /* ReadyForQuery of pgtenant's own simple queries still to swallow */
	uint16_t sync_sets;  /* SET statements in the parameter Query in flight */
	bool sent_since_rfq; /* client bytes went in since the last ReadyForQuery */
	bool close_needed;
	bool fatal_forwarded; /* the linked client got the server's FATAL */
	/* the transaction-mode hand-over (see server.c for the whole model) */
	bool dirty;  /* a client has used it since its last reset */
	bool shared; /* of a shared pool: counted in its reservoir's share_total (pool.c) */
	bool moved;  /* handed to another tenant's pool since its last link: full reset */
	/* the pool of its last link (shared pools), by address and hash: only
	 * compared, never followed (the pool may be gone) */
	const void *last_pool;
	uint64_t last_tenant;
	bool need_setup;       /* linked; reset and parameters ride on the client's first message */
	bool reset_pending;    /* the reset went out; its CommandComplete has not come back */
	bool reset_simple;     /* an old server: the reset goes as a simple Query, confirmed first */
	bool reset_fence;      /* a client Sync/Query went out behind the pending reset */
	bool client_held;      /* the client's input is held until the reset is confirmed */
	bool copy_in;          /* the server waits for COPY data from the client */
	bool cut;              /* a client message reached the server only in part */
	bool draining;         /* the client left mid-transaction: finishing, then kept or closed */
	bool cancel_sent;      /* a CancelRequest went out while draining */
	bool ps_on;            /* the client's requests are tracked (prepare.c) */
	bool reset_keep;       /* the reset in flight keeps pgtenant's statements */
	bool superuser;        /* logged in as a superuser (clients can change session authorization) */
	uint8_t reset_cmds;    /* CommandCompletes of the reset still to come */
	struct ps_server *ps;  /* statements prepared on it, requests in flight */
	uint32_t ps_untracked; /* simple Queries in flight that were not queued (prepare.c) */
	/* session state (session.c): what this link may have changed, and the
	 * check that asks the server */
	uint8_t hint;
	bool session_track; /* transaction mode: hints are gathered */
	bool checking, check_failed;
	uint8_t check_rs;
	char check_pin[64];
	char check_names[256]; /* custom settings the link named: 'a.b','c.d' */
	struct pgt_vars check_vars;
	struct pgt_prefix prefix;  /* what rides in front of the client's first message */
	struct pgt_lookup *lookup; /* running pgtenant's own query (lookup.h) */
	char *setup_error;         /* error from pgtenant's own SET, reported to the client */
	char setup_sqlstate[6];
	usec_t idle_since;
	usec_t query_start;
	usec_t drain_start;
};

extern struct list pgt_all_servers;

/* Open a new server connection for the pool. */
void server_launch(struct pgt_pool *pool);
/* Link to a client (nothing is sent until its first message). */
bool server_link(struct pgt_server *s, struct pgt_client *c) _MUSTCHECK;
/* The client's first message of the link is about to be forwarded: put
 * the reset and its session parameters in front of it. */
void server_begin(struct pgt_server *s, struct pgt_client *c);
/* Drain timeout and other per-server checks (janitor). */
void server_check(struct pgt_server *s, usec_t now);
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
/* The host name (as in the entry) and port of the address s uses. */
const char *server_host_name(const struct pgt_server *s);
int server_host_port(const struct pgt_server *s);
/* Run server_check_query on an idle connection; it comes back to the pool
 * (pool_server_ready) when answered, or is closed. */
bool server_start_check(struct pgt_server *s);
/* The entry's names moved during a failover: its idle connections to
 * addresses they no longer resolve to are closed, busy ones once released. */
struct pgt_hostset;
void server_close_moved(struct pgt_hostset *hs);
/* Is s due a check before it is given to a client? */
static inline bool server_check_due(const struct pgt_server *s)
{
	return s->idle_since <= pgt.check_before;
}
/* Move the horizon of server_check_due (janitor, reload). */
void server_check_horizon(usec_t now);

#endif
