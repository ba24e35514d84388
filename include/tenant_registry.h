/*
 * Run-time state per tenant: how many clients it has (for its
 * max_client_conn quota), and the optional dynamic registry: tenant_query
 * run with the tenant id as a bound parameter ($1, never string-built SQL)
 * on pgtenant's own server connections, asynchronously, its answers cached
 * for tenant_query_cache_ttl.  A slow registry delays only the logins that
 * wait for its answer; the event loop never waits.
 */
#ifndef PGT_TENANT_REGISTRY_H
#define PGT_TENANT_REGISTRY_H

#include <stdbool.h>

#include "list.h"
#include "sbuf.h"
#include "util.h"

struct pgt_client;
struct pgt_server;
struct pgt_pool;
struct pgt_pkt;
struct registry_lookup;
struct pgt_database;

struct pgt_tenant_state {
	struct pgt_tenant_state *hnext; /* first: util_rehash's chain (tenant_state_find) */
	struct list node;
	char *id;
	uint64_t hash;
	int nclients;
	/* without clients: on the idle list (oldest first) since idle_since,
	 * forgotten after tenant_idle_timeout unless configured */
	struct list idle_node;
	usec_t idle_since;
	struct list pools;   /* its pools (pool.c) */
	bool admin_disabled; /* DISABLE <tenant> from the admin console */
	/* the registry's last answer */
	bool reg_known;     /* an answer was received ... */
	usec_t reg_fetched; /* ... at this time */
	bool reg_found;     /* the query returned a row */
	bool reg_active;
	int reg_pool_size; /* -1 = default */
	int reg_max_client_conn;
	int reg_xact_rate;              /* -1 = default */
	struct registry_lookup *lookup; /* in flight or queued */
	/* transaction rate limit (ratelimit.h); xrate 0 = none */
	int xrate, xburst;
	int64_t tat_ns, interval_ns; /* the bucket: theoretical arrival time, ns per token */
	struct pgt_client *throttle_head, *throttle_tail; /* queued clients, FIFO */
	int nthrottled;
	struct list throttling_node; /* on ratelimit.c's list while the queue is not empty */
	struct event *throttle_ev;   /* grants the queue's head its token; made on first use */
	uint64_t throttled_total;    /* transactions that had to wait */
	usec_t throttle_wait;        /* their total wait */
};

extern struct list pgt_tenant_states;

struct pgt_tenant_state *tenant_state_get(const char *id);
struct pgt_tenant_state *tenant_state_find(const char *id);
/* A client of the tenant came (is counted) or left. */
void tenant_state_client_added(struct pgt_tenant_state *t);
void tenant_state_client_gone(struct pgt_tenant_state *t);
/* Forget tenants not in [tenants] that had no client for
 * tenant_idle_timeout (janitor); costs what there is to forget. */
void tenant_states_expire(usec_t now);
/* A state that was kept (configured, or disabled from the console) may be
 * forgettable now: back on the idle list if it has no client.  After a
 * RELOAD (every state) or an ENABLE (one). */
void tenant_state_recheck(struct pgt_tenant_state *t);
void tenant_states_config_changed(void);

/* Is the registry's answer for t usable now? */
bool registry_fresh(const struct pgt_tenant_state *t);
/* Ask the registry about c's tenant; c waits (its login continues through
 * client_registry_done).  dbname/db: where the query runs. */
void registry_request(struct pgt_client *c, struct pgt_tenant_state *t, const char *dbname,
                      const struct pgt_database *db, const char *user);
/* c is going away: stop waiting for an answer. */
void registry_forget_client(struct pgt_client *c);

#endif
