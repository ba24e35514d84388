/*
 * Per-tenant run-time state and the dynamic tenant registry (see
 * tenant_registry.h).
 *
 * A lookup is queued per tenant (clients of the same tenant share it) in the
 * pool of the database entry it runs against, keyed by an internal tenant
 * name that no real tenant id can take.  When one of that pool's server
 * connections is ready it sends Parse/Bind/Execute/Sync with the id bound as
 * $1 and reads the first row: pool_size, max_client_conn, active and,
 * if the query returns a fourth column, xact_rate.
 */
#include "tenant_registry.h"

#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "lookup.h"
#include "loop.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "ratelimit.h"
#include "sbuf.h"
#include "server.h"

struct list pgt_tenant_states = {&pgt_tenant_states, &pgt_tenant_states};

struct registry_lookup {
	struct pgt_lookup base; /* first */
	struct pgt_tenant_state *t;
	struct pgt_client **waiters;
	int nwaiters, cap;
	bool got_row;
	bool active;
	int pool_size, max_client_conn, xact_rate;
};
/* states without clients, in the order they lost their last one */
static struct list idle_states = {&idle_states, &idle_states};

/* Tenant states by id (also on pgt_tenant_states, for listing). */
static struct {
	struct pgt_tenant_state **b;
	uint32_t nb, n;
} states;

_Static_assert(offsetof(struct pgt_tenant_state, hnext) == 0, "util_rehash needs the chain first");

static uint64_t state_hash(const void *node)
{
	return ((const struct pgt_tenant_state *)node)->hash;
}

struct pgt_tenant_state *tenant_state_find(const char *id)
{
	if (!states.nb)
		return NULL;
	uint64_t h = util_hash_str(id);
	for (struct pgt_tenant_state *t = states.b[h & (states.nb - 1)]; t; t = t->hnext)
		if (t->hash == h && strcmp(t->id, id) == 0)
			return t;
	return NULL;
}

struct pgt_tenant_state *tenant_state_get(const char *id)
{
	struct pgt_tenant_state *t = tenant_state_find(id);
	if (t)
		return t;
	if (states.n + 1 > states.nb) {
		uint32_t nb = states.nb ? states.nb * 2 : 64;
		states.b =
		    (struct pgt_tenant_state **)util_rehash((void **)states.b, states.nb, nb, state_hash);
		states.nb = nb;
	}
	t = xcalloc(1, sizeof(*t));
	t->id = xstrdup(id);
	t->hash = util_hash_str(id);
	t->reg_pool_size = t->reg_max_client_conn = t->reg_xact_rate = -1;
	list_init(&t->pools);
	list_init(&t->throttling_node);
	t->idle_since = loop_now();
	list_append(&idle_states, &t->idle_node);
	t->hnext = states.b[t->hash & (states.nb - 1)];
	states.b[t->hash & (states.nb - 1)] = t;
	states.n++;
	list_append(&pgt_tenant_states, &t->node);
	rate_refresh(t);
	return t;
}

void tenant_state_client_added(struct pgt_tenant_state *t)
{
	if (t->nclients++ == 0)
		list_del(&t->idle_node);
}

void tenant_state_client_gone(struct pgt_tenant_state *t)
{
	if (--t->nclients == 0) {
		t->idle_since = loop_now();
		list_append(&idle_states, &t->idle_node);
	}
}

void tenant_state_recheck(struct pgt_tenant_state *t)
{
	if (t->nclients == 0 && list_empty(&t->idle_node)) {
		t->idle_since = loop_now();
		list_append(&idle_states, &t->idle_node);
	}
}

void tenant_states_config_changed(void)
{
	struct list *i;
	list_for_each (i, &pgt_tenant_states) {
		struct pgt_tenant_state *t = container_of(i, struct pgt_tenant_state, node);
		tenant_state_recheck(t);
		rate_refresh(t);
	}
}

static void state_free(struct pgt_tenant_state *t)
{
	struct pgt_tenant_state **pp = &states.b[t->hash & (states.nb - 1)];
	while (*pp != t)
		pp = &(*pp)->hnext;
	*pp = t->hnext;
	states.n--;
	if (states.nb > 64 && states.n < states.nb / 8) {
		states.b = (struct pgt_tenant_state **)util_rehash((void **)states.b, states.nb,
		                                                   states.nb / 2, state_hash);
		states.nb /= 2;
	}
	list_del(&t->node);
	list_del(&t->idle_node);
	rate_state_free(t);
	free(t->id);
	free(t);
}

/* Tenants forgotten since the heap was last trimmed. */
static int forgotten_since_trim;

void tenant_states_expire(usec_t now)
{
	struct list *l;
	int before = forgotten_since_trim;
	while ((l = list_first(&idle_states)) != NULL) {
		struct pgt_tenant_state *t = container_of(l, struct pgt_tenant_state, idle_node);
		if (now - t->idle_since < pgt.cfg->tenant_idle_timeout)
			break; /* the rest went idle later */
		list_del(&t->idle_node);
		if (config_find_tenant(pgt.cfg, t->id) || t->admin_disabled)
			continue; /* kept; back on the list when a client comes and goes */
		if (t->lookup || !pool_forget_tenant(&t->pools)) {
			/* a registry answer or a server connection still busy: later */
			t->idle_since = now;
			list_append(&idle_states, &t->idle_node);
			continue;
		}
		log_info("tenant \"%s\" forgotten: no client for tenant_idle_timeout", t->id);
		state_free(t);
		forgotten_since_trim++;
	}
	if (forgotten_since_trim >= 256 && forgotten_since_trim == before) {
		/* a crowd of one-off tenants is gone (none went this round): give
		 * their memory back; free() keeps what lies between chunks still
		 * in use */
		malloc_trim(0);
		forgotten_since_trim = 0;
	}
}

bool registry_fresh(const struct pgt_tenant_state *t)
{
	return t->reg_known && loop_now() - t->reg_fetched < pgt.cfg->tenant_query_cache_ttl;
}

/* The registry answered (or failed): tell the clients that waited. */
static void lookup_done(struct pgt_lookup *base)
{
	struct registry_lookup *l = container_of(base, struct registry_lookup, base);
	struct pgt_tenant_state *t = l->t;
	const char *error = l->base.error;
	t->lookup = NULL;
	if (!error) {
		t->reg_known = true;
		t->reg_fetched = loop_now();
		t->reg_found = l->got_row;
		t->reg_active = l->active;
		t->reg_pool_size = l->pool_size;
		t->reg_max_client_conn = l->max_client_conn;
		t->reg_xact_rate = l->xact_rate;
		rate_refresh(t);
	} else {
		log_warning("tenant_query for \"%s\" failed: %s", t->id, error);
	}
	for (int i = 0; i < l->nwaiters; i++) {
		struct pgt_client *c = l->waiters[i];
		c->lookup = NULL;
		if (error)
			client_fail(c, "08006", "tenant registry unavailable: %s", error);
		else
			client_registry_done(c);
	}
	free(l->waiters);
	free(l->base.error);
	free(l);
}

static const char *lookup_sql(const struct pgt_lookup *base)
{
	(void)base;
	return pgt.cfg->tenant_query;
}

static const char *lookup_param(const struct pgt_lookup *base)
{
	return container_of(base, const struct registry_lookup, base)->t->id;
}

static int parse_int_col(const uint8_t *p, int32_t len)
{
	if (len < 0 || len > 10)
		return -1;
	char buf[12];
	memcpy(buf, p, (size_t)len);
	buf[len] = '\0';
	long v;
	return util_parse_int(buf, 0, 1000000, &v) ? (int)v : -1;
}

/* The first row is the answer: pool_size, max_client_conn, active[, xact_rate]. */
static void lookup_row(struct pgt_lookup *base, const uint8_t *body, uint32_t len)
{
	struct registry_lookup *l = container_of(base, struct registry_lookup, base);
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	uint16_t n = proto_get_u16(&r);
	int vals[4] = {-1, -1, -1, -1}; /* pool_size, max_client_conn, -, xact_rate */
	bool active = true;
	for (int i = 0; i < n && !r.bad; i++) {
		int32_t cl = (int32_t)proto_get_u32(&r);
		const uint8_t *v = cl > 0 ? proto_get_bytes(&r, (size_t)cl) : NULL;
		if (r.bad)
			break;
		if (i < 2 || i == 3)
			vals[i] = v ? parse_int_col(v, cl) : -1;
		else if (i == 2)
			active = !(v && (v[0] == 'f' || v[0] == 'F' || v[0] == '0' || v[0] == 'n'));
	}
	if (!l->got_row) {
		l->got_row = true;
		l->pool_size = vals[0];
		l->max_client_conn = vals[1];
		l->xact_rate = vals[3];
		l->active = active;
	}
}

static const struct lookup_ops registry_ops = {
    .sql = lookup_sql, .param = lookup_param, .row = lookup_row, .done = lookup_done};

void registry_request(struct pgt_client *c, struct pgt_tenant_state *t, const char *dbname,
                      const struct pgt_database *db, const char *user)
{
	struct registry_lookup *l = t->lookup;
	if (!l) {
		l = xcalloc(1, sizeof(*l));
		l->t = t;
		l->pool_size = l->max_client_conn = l->xact_rate = -1;
		/* '*' can never be in a tenant id: this pool cannot collide with a tenant's */
		l->base.pool = pool_get(dbname, db, user, "*registry*", 0);
		l->base.pool->internal = true;
		l->base.ops = &registry_ops;
		t->lookup = l;
		lookup_queue(&l->base);
		client_log(c, PGT_LOG_DEBUG, "asking the tenant registry about \"%s\"", t->id);
	}
	if (l->nwaiters == l->cap)
		l->waiters =
		    xrealloc(l->waiters, sizeof(*l->waiters) * (size_t)(l->cap = l->cap ? l->cap * 2 : 4));
	l->waiters[l->nwaiters++] = c;
	c->lookup = l;
	lookup_kick(&l->base);
}

void registry_forget_client(struct pgt_client *c)
{
	struct registry_lookup *l = c->lookup;
	if (!l)
		return;
	for (int i = 0; i < l->nwaiters; i++) {
		if (l->waiters[i] == c) {
			l->waiters[i] = l->waiters[--l->nwaiters];
			break;
		}
	}
	c->lookup = NULL;
}
