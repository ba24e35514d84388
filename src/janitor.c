/*
 * Periodic maintenance (see janitor.h).  Runs every 200 ms: timeouts are
 * enforced within that granularity, and a scan is O(connections), which at
 * 10,000 clients is a few microseconds of list walking.
 */
#include "janitor.h"

#include <event2/event.h>
#include <event2/event_struct.h>

#include "addrstate.h"
#include "admin.h"
#include "client.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "pool.h"
#include "ratelimit.h"
#include "server.h"
#include "stats.h"
#include "tenant_registry.h"

static struct event janitor_ev;

static void check_clients(usec_t now)
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
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		struct list *j, *jt;
		list_for_each_safe (j, jt, &p->welcome_clients) {
			struct pgt_client *c = container_of(j, struct pgt_client, node);
			if (cfg->query_wait_timeout > 0 && now - c->wait_start > cfg->query_wait_timeout) {
				metrics_refused(REFUSAL_WAIT_TIMEOUT);
				client_fail(c, "08P01",
				            "query_wait_timeout (no server connection available)");
			}
		}
		list_for_each_safe (j, jt, &p->waiting_clients) {
			struct pgt_client *c = container_of(j, struct pgt_client, node);
			if (cfg->query_wait_timeout > 0 && now - c->wait_start > cfg->query_wait_timeout) {
				metrics_refused(REFUSAL_WAIT_TIMEOUT);
				client_fail(c, "08P01",
				            "query_wait_timeout (no server connection available)");
			}
		}
		list_for_each_safe (j, jt, &p->active_clients) {
			struct pgt_client *c = container_of(j, struct pgt_client, node);
			struct pgt_server *s = c->server;
			if (!s) {
				if (cfg->client_idle_timeout > 0 &&
				    now - c->conn.request_time > cfg->client_idle_timeout)
					client_fail(c, "08P01", "client_idle_timeout (client idle too long)");
				continue;
			}
			if (cfg->query_timeout > 0 && s->query_start &&
			    now - s->query_start > cfg->query_timeout) {
				server_cancel(s);
				client_fail(c, "57014", "query_timeout (query ran too long)");
				continue;
			}
			if (cfg->idle_transaction_timeout > 0 && s->txn != 'I' && s->expect_rfq == 0 &&
			    now - c->conn.request_time > cfg->idle_transaction_timeout &&
			    now - s->conn.request_time > cfg->idle_transaction_timeout) {
				client_fail(c, "25P03",
				            "idle_transaction_timeout (transaction idle too long)");
				continue;
			}
			if (cfg->client_idle_timeout > 0 && s->txn == 'I' && s->expect_rfq == 0 &&
			    now - c->conn.request_time > cfg->client_idle_timeout)
				client_fail(c, "08P01", "client_idle_timeout (client idle too long)");
		}
	}
}

static void check_servers(usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		struct list *j, *jt;
		list_for_each_safe (j, jt, &p->login_servers) {
			struct pgt_server *s = container_of(j, struct pgt_server, node);
			if (cfg->server_connect_timeout > 0 &&
			    now - s->conn.connect_time > cfg->server_connect_timeout)
				server_fail(
				    s, "server_connect_timeout (could not log in to the server in time)");
		}
		list_for_each_safe (j, jt, &p->used_servers)
			server_check(container_of(j, struct pgt_server, node), now);
		pool_maintain(p, now);
	}
	pool_drop_unused(now);
}

void janitor_run(void)
{
	usec_t now = loop_now();
	pgt.coarse_now = now;
	check_clients(now);
	check_servers(now);
	admin_check_pending();
	rate_expire(now);
	tenant_states_expire(now);
	stats_tick(now);
	addr_state_expire(now);
	if (pgt.shutting_down && pool_total_busy() == 0) {
		log_info("no server connection in use: shutting down");
		loop_shutdown(true);
	}
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	janitor_run();
}

bool janitor_start(void)
{
	struct timeval tv = {0, 200000};
	event_assign(&janitor_ev, pgt.base, -1, EV_PERSIST, janitor_cb, NULL);
	return event_add(&janitor_ev, &tv) == 0;
}

void janitor_stop(void)
{
	event_del(&janitor_ev);
}
