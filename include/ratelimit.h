/*
 * Per-tenant transaction rate limits (tenant_xact_rate, xact_rate= in
 * [tenants] or from tenant_query, tenant_xact_burst).
 *
 * One token bucket per tenant, kept as a theoretical arrival time (GCRA):
 * a transaction may start when the tenant's `tat` is at most burst-1
 * intervals ahead of now, and starting it moves `tat` one interval on.  The
 * charge is taken where a transaction is handed a server connection: in
 * transaction mode when a client without one sends the first message of a
 * transaction; for a client that keeps its connection (session mode, or
 * pinned) at the first message after a ReadyForQuery 'I'.  A pipelined batch
 * is charged once.  A client over the limit holds its message and nothing
 * else (no server connection: in transaction mode it has none yet) in its
 * tenant's queue, FIFO, until a per-tenant timer grants it a token, or until
 * query_wait_timeout refuses it with 08P01.  Other tenants never wait for it.
 */
#ifndef PGT_RATELIMIT_H
#define PGT_RATELIMIT_H

#include <stdbool.h>

#include "client.h"
#include "config.h"
#include "pool.h"
#include "server.h"
#include "tenant_registry.h"

/* Admit c's transaction now (true), or queue it (false: hold its message). */
bool rate_admit(struct pgt_client *c);

/* Does c's message start a transaction that must be charged?  Only called
 * for a tenant with a limit. */
static inline bool rate_boundary(const struct pgt_client *c, const struct pgt_server *s)
{
	if (!s)
		return true;
	/* a client keeping its connection between transactions; a transaction-
	 * mode client linked just now is re-reading the message it was charged
	 * for before it got the link */
	return (c->pin || pool_mode(c->pool) == PGT_POOL_SESSION) && s->txn == 'I' && s->expect_rfq == 0 &&
	       !s->sent_since_rfq;
}

/* The limit that applies to t under the config (and registry answer) in
 * force; queued clients are granted at once if it was lifted. */
void rate_refresh(struct pgt_tenant_state *t);
/* c is going away: off its tenant's queue. */
void rate_forget_client(struct pgt_client *c);
/* query_wait_timeout for queued clients (janitor): costs the tenants with a
 * queue. */
bool rate_expire(usec_t now); /* true if some still wait */
/* t is being freed. */
void rate_state_free(struct pgt_tenant_state *t);
/* Tokens in t's bucket now (SHOW TENANTS). */
long rate_tokens(const struct pgt_tenant_state *t);

#endif
