/*
 * Periodic maintenance (see janitor.h).  Runs every 200 ms while anything
 * is going on (a login, a wait, a server connection in use, a queue behind a
 * rate limit): timeouts are enforced within that granularity.  When a round
 * finds everything idle the next is a second later, and whatever starts
 * something (janitor_wake) brings the 200 ms rounds back at once.
 *
 * A round costs what there is to do: the server connections, the logins
 * and the pools where a client waits, tenants due to be forgotten, queues
 * behind a rate limit; not the number of tenants, pools or idle clients
 * (those only with client_idle_timeout or a min_pool_size set, which need
 * every client or pool looked at).
 */
#include "janitor.h"

#include <event2/event.h>
#include <event2/event_struct.h>

#include "addrstate.h"
#include "admin.h"
#include "client.h"
#include "config.h"
#include "jwks.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "pool.h"
#include "ratelimit.h"
#include "secretfile.h"
#include "server.h"
#include "stats.h"
#include "tenant_registry.h"

static struct event janitor_ev;

/* Round intervals: while something is going on, and while nothing is (an
 * idle pgtenant with 10,000 clients wakes once a second, as PgBouncer) */
#define JANITOR_FAST (200 * 1000)
#define JANITOR_SLOW USEC_PER_SEC

static void wait_timeouts(struct list *lst, usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	struct list *j, *jt;
	list_for_each_safe (j, jt, lst) {
		struct pgt_client *c = container_of(j, struct pgt_client, node);
		if (now - c->wait_start > cfg->query_wait_timeout) {
			metrics_refused(REFUSAL_WAIT_TIMEOUT);
			client_fail(c, "08P01", "query_wait_timeout (no server connection available)");
		}
	}
}

/* Logins, and pools where someone waits: query_wait_timeout, and more
 * server connections for them. */
static void check_waiting(usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	struct list *i, *tmp;
	if (cfg->client_login_timeout > 0) {
		list_for_each_safe (i, tmp, client_login_list()) {
			struct pgt_client *c = container_of(i, struct pgt_client, node);
			if (now - c->conn.connect_time > cfg->client_login_timeout)
				client_fail(c, "08P01", "client_login_timeout (login took too long)");
		}
	}
	list_for_each_safe (i, tmp, &pgt_waiting_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, wait_node);
		if (cfg->query_wait_timeout > 0) {
			wait_timeouts(&p->welcome_clients, now);
			wait_timeouts(&p->waiting_clients, now);
		}
		if (p->nwaiting == 0 && p->nwelcome == 0)
			list_del(&p->wait_node); /* back when a client waits again */
		else
			pool_maybe_launch(p);
	}
}

/* A client linked to s: the timeouts of its query and transaction. */
static void check_linked(struct pgt_server *s, usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	struct pgt_client *c = s->client;
	if (cfg->query_timeout > 0 && s->query_start && now - s->query_start > cfg->query_timeout) {
		server_cancel(s);
		client_fail(c, "57014", "query_timeout (query ran too long)");
		/* and its server connection closed, as PgBouncer does: a query
		 * that overran may be stuck on a stalled or dead server, which
		 * draining (server_abandon) would keep for its 10 s timeout */
		if (!s->conn.dead)
			server_close(s, "query_timeout: a query ran too long");
		return;
	}
	if (cfg->idle_transaction_timeout > 0 && s->txn != 'I' && s->expect_rfq == 0 &&
	    now - c->conn.request_time > cfg->idle_transaction_timeout &&
	    now - s->conn.request_time > cfg->idle_transaction_timeout) {
		client_fail(c, "25P03", "idle_transaction_timeout (transaction idle too long)");
		return;
	}
	if (cfg->client_idle_timeout > 0 && s->txn == 'I' && s->expect_rfq == 0 &&
	    now - c->conn.request_time > cfg->client_idle_timeout)
		client_fail(c, "08P01", "client_idle_timeout (client idle too long)");
}

/* Every server connection once: costs the number of server connections
 * (at most a few hundred), not of pools or clients. */
static bool check_servers(usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	struct list *i, *tmp;
	bool busy = false;
	list_for_each_safe (i, tmp, &pgt_all_servers) {
		struct pgt_server *s = container_of(i, struct pgt_server, conn_all_node);
		busy |= s->state != SV_IDLE;
		switch (s->state) {
		case SV_LOGIN:
			if (cfg->server_connect_timeout > 0 &&
			    now - s->conn.connect_time > cfg->server_connect_timeout)
				server_fail(
				    s, "server_connect_timeout (could not log in to the server in time)");
			break;
		case SV_USED:
			server_check(s, now);
			break;
		case SV_IDLE:
			pool_check_idle(s, now);
			break;
		case SV_ACTIVE:
			if (s->client)
				check_linked(s, now);
			break;
		default:
			break;
		}
	}
	return busy;
}

/* Clients without a server connection: only client_idle_timeout concerns
 * them, and only then are they all looked at. */
static void check_idle_clients(usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	if (cfg->client_idle_timeout <= 0)
		return;
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		struct list *j, *jt;
		list_for_each_safe (j, jt, &p->active_clients) {
			struct pgt_client *c = container_of(j, struct pgt_client, node);
			if (!c->server && now - c->conn.request_time > cfg->client_idle_timeout)
				client_fail(c, "08P01", "client_idle_timeout (client idle too long)");
		}
	}
}

/* Does any pool have a min_pool_size (then every pool is looked at)?
 * Worked out once per configuration. */
static bool min_pool_configured(void)
{
	static const struct pgt_config *seen;
	static bool any;
	const struct pgt_config *cfg = pgt.cfg;
	if (cfg != seen) {
		seen = cfg;
		any = cfg->min_pool_size > 0;
		for (int i = 0; !any && i < cfg->ndbs; i++)
			any = cfg->dbs[i].min_pool_size > 0;
		for (int i = 0; !any && i < cfg->ntenants; i++)
			any = cfg->tenants[i].min_pool_size > 0;
	}
	return any;
}

bool janitor_run(void)
{
	usec_t now = loop_now();
	pgt.coarse_now = now;
	server_check_horizon(now);
	check_waiting(now);
	bool busy = check_servers(now);
	check_idle_clients(now);
	if (min_pool_configured()) {
		struct list *i;
		list_for_each (i, &pgt_pools)
			pool_maintain(container_of(i, struct pgt_pool, node));
	}
	if (config_find_db(pgt.cfg, "*"))
		pool_drop_unused(now);
	busy |= admin_check_pending();
	busy |= rate_expire(now);
	tenant_states_expire(now);
	stats_tick(now);
	addr_state_expire(now);
	jwt_watch(pgt.cfg, now);
	secretfile_watch(now);
	jwks_tick(now);
	if (pgt.shutting_down && pool_total_busy() == 0) {
		log_info("no server connection in use: shutting down");
		loop_shutdown(true);
	}
	return busy || pgt.shutting_down || !list_empty(&pgt_waiting_pools) ||
	       !list_empty(client_login_list());
}

static void arm(usec_t usec)
{
	struct timeval tv = {(time_t)(usec / USEC_PER_SEC), (suseconds_t)(usec % USEC_PER_SEC)};
	event_add(&janitor_ev, &tv);
}

/* A second, or less when a timeout that runs out while nothing happens
 * (idle server connections, idle clients, idle tenants) is shorter: it is
 * still enforced within half of itself. */
static usec_t slow_interval(void)
{
	const struct pgt_config *cfg = pgt.cfg;
	const usec_t t[] = {cfg->server_idle_timeout, cfg->server_lifetime, cfg->client_idle_timeout,
	                    cfg->tenant_idle_timeout};
	usec_t iv = JANITOR_SLOW;
	for (size_t i = 0; i < PGT_ARRAY_SIZE(t); i++)
		if (t[i] > 0)
			iv = PGT_MIN(iv, PGT_MAX(JANITOR_FAST, t[i] / 2));
	return iv;
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	bool busy = janitor_run();
	pgt.janitor_slow = !busy;
	arm(busy ? JANITOR_FAST : slow_interval());
}

void janitor_wake_slow(void)
{
	pgt.janitor_slow = false;
	pgt.coarse_now = loop_now();
	event_del(&janitor_ev);
	arm(JANITOR_FAST);
}

bool janitor_start(void)
{
	struct timeval tv = {0, JANITOR_FAST};
	event_assign(&janitor_ev, pgt.base, -1, 0, janitor_cb, NULL);
	return event_add(&janitor_ev, &tv) == 0;
}

void janitor_stop(void)
{
	event_del(&janitor_ev);
}
