/*
 * Pools and the registry of pools.  A pool is keyed by (database entry,
 * server user, tenant) and owns the state lists of its clients and server
 * connections.  Assignment is FIFO for clients and LIFO for idle servers
 * (the most recently used connection has the warmest caches).
 */
#ifndef PGT_POOL_H
#define PGT_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "janitor.h"
#include "list.h"
#include "stats.h"
#include "util.h"
#include "varcache.h"

struct pgt_client;
struct pgt_server;
struct pgt_database;
struct pgt_tenant_conf;
struct pgt_tenant_state;
struct pgt_user_conf;

/* Per database entry: server connections across all its pools, and the
 * pools waiting for a connection slot when max_db_connections is reached
 * (served round-robin, so that each tenant gets its turn). */
struct pgt_dbstate {
	struct list node;
	char *name;
	int nservers;
	struct list slot_waiters;
	bool paused;               /* PAUSE: no new transactions start */
	int server_version_num;    /* of the first server login, 0 = none yet */
	bool no_check_interval;    /* the server refused client_connection_check_interval */
	bool tls_upgrade;          /* sslmode allow: the server refused a plaintext login */
	struct pgt_hostset *hosts; /* the entry's hosts, their addresses and roles (hosts.h) */
};

/* Per user name (PgBouncer's global user): the server connections of the
 * pools whose server user it is, for max_user_connections, with the pools
 * waiting for one of its slots; and the clients logged in under the name,
 * for max_user_client_connections.  Made when a pool or a login first
 * needs it (a hash lookup at login or pool creation, never per message),
 * freed when the last pool and client holding it go. */
struct pgt_user_state {
	struct pgt_user_state *hnext; /* first: util_rehash's chain */
	uint64_t hash;
	struct list node; /* on pgt_user_states (SHOW USERS) */
	char *name;
	int nservers;             /* server connections of its pools, in any state */
	int nclients;             /* clients logged in as it (admin console included) */
	int refs;                 /* pools and clients that hold it */
	struct list slot_waiters; /* pools waiting for a slot under max_user_connections */
};

extern struct list pgt_user_states;
/* The state of user `name`, made if needed, with one more reference. */
struct pgt_user_state *user_state_hold(const char *name);
/* Drop a reference; the state goes with the last one. */
void user_state_release(struct pgt_user_state *u);
struct pgt_user_state *user_state_find(const char *name);
/* max_user_connections of the user in the config in force (0 = no cap). */
int user_max_connections(const struct pgt_user_conf *uc);

extern bool pgt_paused_all;
extern struct list pgt_dbstates; /* every database entry's state */ /* PAUSE without a database */

struct pgt_pool {
	struct pgt_pool *hnext;              /* first: util_rehash's chain (pool_get) */
	uint64_t hash;                       /* of dbname, user, tenant, replication */
	struct list node;                    /* on the global pool list */
	struct list tenant_node;             /* on its tenant state's list (tenant_registry.h) */
	struct list slot_node;               /* on dbstate->slot_waiters when waiting for a slot */
	char *dbname;                        /* [databases] entry name */
	char *user;                          /* server user */
	char *tenant;                        /* "" until tenancy */
	const struct pgt_database *db;       /* refreshed on reload; never NULL (see removed_db) */
	const struct pgt_tenant_conf *tconf; /* the tenant's [tenants] entry, refreshed on reload */
	struct pgt_tenant_state *tstate;     /* its tenant's run-time state (outlives its pools), or NULL */
	char *db_dbname;                     /* the backend this pool's servers were opened to */
	uint32_t db_hosts_gen;               /* ... and the generation of its host list (hosts.h) */
	struct pgt_dbstate *dbstate;
	const struct pgt_user_conf *uconf; /* its server user's [users] entry, refreshed on reload */
	struct pgt_user_state *ustate;     /* its server user's run-time state (held) */
	struct list user_slot_node;        /* on ustate->slot_waiters while max_user_connections holds it */

	struct list welcome_clients; /* authenticated, waiting for server parameters */
	struct list active_clients;  /* logged in, not waiting (linked or idle) */
	struct list waiting_clients; /* waiting for a server, FIFO */
	int nwaiting;                /* its length (launch decisions must not walk it) */
	int nactive, nwelcome; /* lengths of active_clients and welcome_clients (metrics are O(pools)) */
	struct list login_servers, idle_servers, active_servers, used_servers;
	int nservers;       /* all server connections of this pool */
	int nchecking;      /* ... of which running server_check_query */
	bool internal;      /* pgtenant's own connections (tenant registry): no pin, no clients */
	char replication;   /* 'd' replication=database, 'p' physical: session mode, never reused */
	int8_t mode;        /* pool_mode(), from the configuration as of the last (re)load */
	bool session_track; /* transaction mode: session state is tracked (unless internal) */
	bool ps_on;         /* ... and so are named prepared statements (prepare.c) */
	bool tenant_role;   /* user is the tenant's own role (password from auth_file) */
	bool entry_user;    /* user was the entry's own: logins take its password file's username */
	usec_t full_until;  /* the server refused a login with 53300: no new one before this */
	int internal_want;  /* queued registry lookups */

	struct pgt_vars welcome; /* ParameterStatus values from the first login */
	/* Shared pools (tenant_pool_mode = shared).  A tenant pool that is
	 * `shared` borrows its server connections from the reservoir of its
	 * (database entry, server user), `res`, for one link at a time; the
	 * reservoir holds them while idle and counts them all (share_total,
	 * capped by the entry's pool_size).  `pin`: the SETs each link on a
	 * borrowed connection starts with (hash 0 on other pools). */
	bool shared, reservoir;
	struct pgt_pool *res;
	struct pgt_vars pin;
	struct list wait_node;     /* on pgt_waiting_pools (janitor) since a client waited in it */
	struct list share_node;    /* on res->share_waiters while it waits for a connection */
	struct list share_waiters; /* reservoir: tenant pools waiting, served in turn */
	int share_total;           /* reservoir: its connections, idle here or lent */
	int nsharers;              /* reservoir: tenant pools that are shared (none: its idle ones close) */
	bool base_disabled;        /* a login with a client's parameters failed: open servers without */
	bool welcome_ready;
	bool welcome_borrowed; /* `welcome` is the reservoir's (shared pools): not freed with it */
	/* named Binds per link, a moving average in sixteenths: whether keeping
	 * a connection's prepared statements over a reset pays (server.c) */
	uint32_t ps_uses_avg;
	usec_t empty_since;  /* a pool of the "*" entry: nobody in it since (0 = in use) */
	int npinned;         /* clients pinned to their server connection (session.c) */
	uint64_t stats_pins; /* times a client was pinned */
	uint32_t generation; /* bumped by RECONNECT/changed backend */
	/* the entry was removed by a reload: db points at this private copy, the
	 * clients already in keep being served, servers close once they are gone */
	struct pgt_database *removed_db;

	usec_t last_fail_time; /* last server login failure (for back-off) */
	char last_error[256];
	struct pgt_pool_stats stats;
	struct pgt_pool_stats newer_stats, older_stats; /* at the end and start of the last stats_period */
};

extern struct list pgt_pools;
/* Pools that had a client waiting (for a server, or for the server
 * parameters) since the janitor last found them with none: its timeouts and
 * launches cost what waits, not the number of pools. */
extern struct list pgt_waiting_pools;
static inline void pool_note_waiting(struct pgt_pool *p)
{
	if (list_empty(&p->wait_node))
		list_append(&pgt_waiting_pools, &p->wait_node);
	janitor_wake();
}

/* Drop the pools of the "*" entry that nobody has used for
 * autodb_idle_timeout (janitor). */
void pool_drop_unused(usec_t now);
/* A forgotten tenant's pools (its tenant state's list): close their idle
 * server connections and free them; false if one still has a client or a
 * busy server connection (then try again later). */
bool pool_forget_tenant(struct list *tenant_pools);
/* Session mode: the key of the server connections a client may get (its
 * startup parameters but application_name). */
uint64_t pool_session_key(const struct pgt_client *c);
/* The pool for a client that asked for database `dbname` (resolved to entry db). */
struct pgt_pool *pool_get(const char *dbname, const struct pgt_database *db, const char *user,
                          const char *tenant, char replication);
/* Database name sent to the server. */
const char *pool_backend_dbname(const struct pgt_pool *pool);
void pool_remember_backend(struct pgt_pool *p);
/* Give c a server now (returns it) or queue c and return NULL. */
struct pgt_server *pool_assign(struct pgt_pool *pool, struct pgt_client *c);
/* A server became usable (login done, released, reset done). */
void pool_server_ready(struct pgt_pool *pool, struct pgt_server *s);
/* Open new server connections if clients wait and quotas allow. */
void pool_maybe_launch(struct pgt_pool *pool);
/* A server connection of the database entry closed: give the slot to the
 * next pool in line. */
void pool_slot_freed(struct pgt_dbstate *d);
/* A server connection of the user closed: the same for max_user_connections. */
void pool_user_slot_freed(struct pgt_user_state *u);
/* A clean server is about to go back to its pool: should it close instead,
 * so that another pool waiting for a slot (max_db_connections,
 * max_user_connections) gets one?  The reason, or NULL. */
const char *pool_should_yield(const struct pgt_pool *pool);
/* The server refused a login for lack of connection slots (53300): the
 * pool holds what it has, clients wait, a new login is tried a second later. */
void pool_server_limit(struct pgt_pool *pool, const char *reason);
/* A server login failed: fail clients that cannot be served otherwise. */
void pool_login_failed(struct pgt_pool *pool, const char *reason);
/* Client connections of the pool, in any state after login. */
int pool_clients(const struct pgt_pool *pool);
/* Effective sizes under the config in force. */
int pool_size_limit(const struct pgt_pool *pool);
/* PGT_POOL_SESSION or PGT_POOL_TRANSACTION. */
static inline int pool_mode(const struct pgt_pool *pool)
{
	return pool->mode;
}
bool pool_in_backoff(const struct pgt_pool *pool);
/* After a reload: re-resolve database entries. */
void pool_config_changed(void);
/* PAUSE in force for this pool's database? */
bool pool_paused(const struct pgt_pool *pool);
/* After RESUME: hand idle servers to waiting clients and open more. */
void pool_kick(struct pgt_pool *pool);
/* Periodic maintenance from the janitor: an idle server connection (close
 * it if it should go), and a pool below its min_pool_size or with waiting
 * clients (open more). */
void pool_check_idle(struct pgt_server *s, usec_t now);
void pool_maintain(struct pgt_pool *pool);
/* A server connection of a shared pool closed: the next waiting tenant
 * pool may open one. */
void pool_share_freed(struct pgt_pool *res);
/* The reservoir learned the server parameters: welcome the clients of
 * tenant pools that waited for them. */
void pool_share_welcome(struct pgt_pool *res);
/* Total server connections in use (not idle) across all pools. */
int pool_total_busy(void);

#endif
