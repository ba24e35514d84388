/*
 * Pool registry and server assignment.
 *
 * Waiting clients are served strictly FIFO within a pool; a client that
 * arrives while others wait queues behind them even if a server is idle at
 * that instant (it will be handed to the head of the queue).  New server
 * connections are opened only for clients that wait, up to the pool size,
 * plus reserve_pool_size once a client has waited reserve_pool_timeout,
 * and never beyond max_db_connections for the database entry.
 */
#include "pool.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "config.h"
#include "hosts.h"
#include "janitor.h"
#include "log.h"
#include "lookup.h"
#include "loop.h"
#include "secretfile.h"
#include "server.h"
#include "tenant.h"
#include "tenant_registry.h"

struct list pgt_pools = {&pgt_pools, &pgt_pools};
struct list pgt_waiting_pools = {&pgt_waiting_pools, &pgt_waiting_pools};
bool pgt_paused_all;
struct list pgt_dbstates = {&pgt_dbstates, &pgt_dbstates};

static struct pgt_dbstate *dbstate_get(const char *name)
{
	struct list *i;
	list_for_each (i, &pgt_dbstates) {
		struct pgt_dbstate *d = container_of(i, struct pgt_dbstate, node);
		if (strcmp(d->name, name) == 0)
			return d;
	}
	struct pgt_dbstate *d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(name);
	d->hosts = xcalloc(1, sizeof(*d->hosts));
	list_init(&d->slot_waiters);
	list_append(&pgt_dbstates, &d->node);
	return d;
}

/* ---- per-user state (max_user_connections, max_user_client_connections) ---- */

struct list pgt_user_states = {&pgt_user_states, &pgt_user_states};

static struct {
	struct pgt_user_state **b;
	uint32_t nb, n;
} ustates;

_Static_assert(offsetof(struct pgt_user_state, hnext) == 0, "util_rehash needs the chain first");

static uint64_t ustate_hash(const void *node)
{
	return ((const struct pgt_user_state *)node)->hash;
}

struct pgt_user_state *user_state_find(const char *name)
{
	if (!ustates.nb)
		return NULL;
	uint64_t h = util_hash_str(name);
	for (struct pgt_user_state *u = ustates.b[h & (ustates.nb - 1)]; u; u = u->hnext)
		if (u->hash == h && strcmp(u->name, name) == 0)
			return u;
	return NULL;
}

struct pgt_user_state *user_state_hold(const char *name)
{
	struct pgt_user_state *u = user_state_find(name);
	if (!u) {
		if (ustates.n + 1 > ustates.nb) {
			uint32_t nb = ustates.nb ? ustates.nb * 2 : 64;
			ustates.b = (struct pgt_user_state **)util_rehash((void **)ustates.b, ustates.nb, nb,
			                                                  ustate_hash);
			ustates.nb = nb;
		}
		u = xcalloc(1, sizeof(*u));
		u->name = xstrdup(name);
		u->hash = util_hash_str(name);
		list_init(&u->slot_waiters);
		u->hnext = ustates.b[u->hash & (ustates.nb - 1)];
		ustates.b[u->hash & (ustates.nb - 1)] = u;
		ustates.n++;
		list_append(&pgt_user_states, &u->node);
	}
	u->refs++;
	return u;
}

void user_state_release(struct pgt_user_state *u)
{
	if (--u->refs > 0)
		return;
	/* no pool or client holds it: no server connection, nobody queued */
	struct pgt_user_state **pp = &ustates.b[u->hash & (ustates.nb - 1)];
	while (*pp != u)
		pp = &(*pp)->hnext;
	*pp = u->hnext;
	ustates.n--;
	if (ustates.nb > 64 && ustates.n < ustates.nb / 8) {
		ustates.b = (struct pgt_user_state **)util_rehash((void **)ustates.b, ustates.nb,
		                                                  ustates.nb / 2, ustate_hash);
		ustates.nb /= 2;
	}
	list_del(&u->node);
	free(u->name);
	free(u);
}

int user_max_connections(const struct pgt_user_conf *uc)
{
	return uc && uc->max_user_connections > 0 ? uc->max_user_connections : 0;
}

static bool user_has_room(const struct pgt_pool *pool)
{
	int cap = user_max_connections(pool->uconf);
	return cap == 0 || pool->ustate->nservers < cap;
}

const char *pool_backend_dbname(const struct pgt_pool *pool)
{
	return pool->db->dbname ? pool->db->dbname : pool->dbname;
}

static struct pgt_pool *reservoir_for(struct pgt_pool *p);

/* The SETs a link on a borrowed connection starts with: what a dedicated
 * pool's connections have in their startup options (server_pin_options). */
static void pin_build(struct pgt_pool *pool)
{
	vars_free(&pool->pin);
	if (!pool->shared)
		return;
	char path[512];
	const struct pgt_config *cfg = pgt.cfg;
	if (tenant_search_path(cfg, pool->tenant, path, sizeof(path)))
		vars_set(&pool->pin, "search_path", path);
	else
		vars_set(&pool->pin, "search_path", ""); /* (refused at login already) */
	if (cfg->tenant_setting[0])
		vars_set(&pool->pin, cfg->tenant_setting, pool->tenant);
	if (pool->tconf && pool->tconf->statement_timeout)
		vars_set(&pool->pin, "statement_timeout", pool->tconf->statement_timeout);
}

static void refresh_mode(struct pgt_pool *pool)
{
	if (pool->replication)
		pool->mode = PGT_POOL_SESSION; /* a replication connection is the client's alone */
	else if (pool->tconf && pool->tconf->pool_mode >= 0)
		pool->mode = (int8_t)pool->tconf->pool_mode;
	else if (pool->uconf && pool->uconf->pool_mode >= 0)
		pool->mode = (int8_t)pool->uconf->pool_mode; /* PgBouncer: the user's over the database's */
	else
		pool->mode = (int8_t)config_db_pool_mode(pgt.cfg, pool->db);
	pool->session_track = pool->mode == PGT_POOL_TRANSACTION;
	pool->ps_on = pool->session_track && pgt.cfg->max_prepared_statements > 0;
	/* shared: transaction mode only (a session would hold its connection
	 * anyway), never pgtenant's own pools */
	bool shared = pool->tenant[0] && pool->tenant[0] != '*' && !pool->internal && !pool->replication &&
	              pool->mode == PGT_POOL_TRANSACTION &&
	              config_tenant_pool_mode(pgt.cfg, pool->db, pool->tconf) == PGT_TENANT_POOL_SHARED;
	if (shared != pool->shared) {
		if (pool->nservers)
			pool->generation++; /* opened for the other kind: closed once released */
		pool->shared = shared;
		if (!shared && !list_empty(&pool->share_node))
			list_del(&pool->share_node);
		if (!shared && pool->welcome_borrowed) {
			/* its own copy from now on: the reservoir may go */
			struct pgt_vars own = {0};
			vars_copy(&own, &pool->welcome);
			pool->welcome = own;
			pool->welcome_borrowed = false;
		}
		if (shared && !pool->res)
			pool->res = reservoir_for(pool);
		pool->res->nsharers += shared ? 1 : -1;
	}
	pin_build(pool);
	if (shared && !pool->welcome_ready && pool->res->welcome_ready) {
		/* the server parameters of any connection of the entry and role:
		 * a new tenant is answered without a server login of its own, and
		 * those that waited for them are answered now.  The reservoir's,
		 * not a copy (a kilobyte per tenant): they never change once known,
		 * and the reservoir outlives its tenant pools. */
		vars_free(&pool->welcome);
		pool->welcome = pool->res->welcome;
		pool->welcome_borrowed = true;
		pool->welcome_ready = true;
		struct list *j, *jt;
		list_for_each_safe (j, jt, &pool->welcome_clients)
			client_welcome(container_of(j, struct pgt_client, node));
	}
}

/* The reservoir of p's (database entry, server user): a pool without
 * clients, keyed by a tenant name no tenant id can take. */
static struct pgt_pool *reservoir_for(struct pgt_pool *p)
{
	struct pgt_pool *r = pool_get(p->dbname, p->db, p->user, "*shared*", 0);
	r->reservoir = true;
	r->res = r;
	return r;
}

/* Pools by (database entry, server user, tenant, replication): a login
 * finds its pool in the same time with one pool or 100,000. */
static struct {
	struct pgt_pool **b;
	uint32_t nb, n;
} pools;

_Static_assert(offsetof(struct pgt_pool, hnext) == 0, "util_rehash needs the chain first");

static uint64_t pool_hash(const void *node)
{
	return ((const struct pgt_pool *)node)->hash;
}

static uint64_t pool_key(const char *dbname, const char *user, const char *tenant, char replication)
{
	uint64_t h = util_hash_str(dbname);
	h = (h ^ util_hash_str(user)) * 1099511628211ull;
	h = (h ^ util_hash_str(tenant)) * 1099511628211ull;
	return h ^ (uint8_t)replication;
}

static void pool_unindex(struct pgt_pool *p)
{
	struct pgt_pool **pp = &pools.b[p->hash & (pools.nb - 1)];
	while (*pp != p)
		pp = &(*pp)->hnext;
	*pp = p->hnext;
	pools.n--;
	if (pools.nb > 64 && pools.n < pools.nb / 8) {
		/* after a crowd of one-off tenants: the table shrinks with them */
		pools.b =
		    (struct pgt_pool **)util_rehash((void **)pools.b, pools.nb, pools.nb / 2, pool_hash);
		pools.nb /= 2;
	}
}

struct pgt_pool *pool_get(const char *dbname, const struct pgt_database *db, const char *user,
                          const char *tenant, char replication)
{
	uint64_t h = pool_key(dbname, user, tenant, replication);
	for (struct pgt_pool *p = pools.nb ? pools.b[h & (pools.nb - 1)] : NULL; p; p = p->hnext) {
		if (p->hash == h && strcmp(p->dbname, dbname) == 0 && strcmp(p->user, user) == 0 &&
		    strcmp(p->tenant, tenant) == 0 && p->replication == replication)
			return p;
	}
	if (pools.n + 1 > pools.nb) {
		uint32_t nb = pools.nb ? pools.nb * 2 : 64;
		pools.b = (struct pgt_pool **)util_rehash((void **)pools.b, pools.nb, nb, pool_hash);
		pools.nb = nb;
	}
	struct pgt_pool *p = xcalloc(1, sizeof(*p));
	p->hash = h;
	p->hnext = pools.b[h & (pools.nb - 1)];
	pools.b[h & (pools.nb - 1)] = p;
	pools.n++;
	p->replication = replication;
	p->dbname = xstrdup(dbname);
	p->user = xstrdup(user);
	p->tenant = xstrdup(tenant);
	p->db = db;
	p->tconf = tenant[0] ? config_find_tenant(pgt.cfg, tenant) : NULL;
	const char *entry_user = secretfile_db_user(pgt.cfg, db);
	p->entry_user = entry_user && strcmp(entry_user, user) == 0;
	list_init(&p->share_node);
	list_init(&p->share_waiters);
	list_init(&p->wait_node);
	p->dbstate = dbstate_get(db->name);
	hosts_sync(p->dbstate->hosts, p->dbstate->name, db);
	p->uconf = config_find_user(pgt.cfg, user);
	p->ustate = user_state_hold(user);
	list_init(&p->user_slot_node);
	/* start by keeping prepared statements over resets: a pool whose
	 * transactions use fewer drifts to discarding within a few dozen */
	p->ps_uses_avg = 4 * 16;
	list_init(&p->welcome_clients);
	list_init(&p->active_clients);
	list_init(&p->waiting_clients);
	list_init(&p->login_servers);
	list_init(&p->idle_servers);
	list_init(&p->active_servers);
	list_init(&p->used_servers);
	list_init(&p->slot_node);
	list_append(&pgt_pools, &p->node);
	list_init(&p->tenant_node);
	if (tenant[0] && tenant[0] != '*') {
		/* ("*registry*", "*shared*": pgtenant's own pools have none) */
		p->tstate = tenant_state_get(tenant);
		list_append(&p->tstate->pools, &p->tenant_node);
	}
	refresh_mode(p);
	pool_remember_backend(p);
	log_debug("new pool %s/%s", p->dbname, p->user);
	return p;
}

/* The size of a shared reservoir (of one database entry and server user):
 * the user's [users] pool_size, else the entry's. */
static int reservoir_size(const struct pgt_pool *r)
{
	if (r->uconf && r->uconf->pool_size >= 0)
		return r->uconf->pool_size;
	return config_db_pool_size(pgt.cfg, r->db);
}

/* pool_size: the tenant's ([tenants], then tenant_query's), then the
 * server user's [users] entry, then the default (tenant_pool_size for a
 * tenant's pool, else the database entry's, else default_pool_size). */
int pool_size_limit(const struct pgt_pool *pool)
{
	if (pool->internal)
		return 2; /* registry lookups are short: two in flight per database entry */
	if (pool->reservoir)
		return reservoir_size(pool); /* the shared pool's size */
	if (pool->tenant[0]) {
		if (pool->tconf && pool->tconf->pool_size >= 0)
			return pool->tconf->pool_size;
		const struct pgt_tenant_state *t = pool->tstate;
		if (t && t->reg_found && t->reg_pool_size >= 0)
			return t->reg_pool_size;
	}
	if (pool->uconf && pool->uconf->pool_size >= 0)
		return pool->uconf->pool_size;
	return pool->tenant[0] ? pgt.cfg->tenant_pool_size : config_db_pool_size(pgt.cfg, pool->db);
}

static int pool_min_size(const struct pgt_pool *pool)
{
	if (pool->tconf && pool->tconf->min_pool_size >= 0)
		return pool->tconf->min_pool_size;
	return pool->db->min_pool_size >= 0 ? pool->db->min_pool_size : pgt.cfg->min_pool_size;
}

static int pool_reserve_size(const struct pgt_pool *pool)
{
	if (pool->tconf && pool->tconf->reserve_pool >= 0)
		return pool->tconf->reserve_pool;
	if (pool->uconf && pool->uconf->reserve_pool >= 0)
		return pool->uconf->reserve_pool;
	return pool->db->reserve_pool >= 0 ? pool->db->reserve_pool : pgt.cfg->reserve_pool_size;
}

/* During a failover (hosts.h) logins are tried again every 250 ms: the
 * clients waiting want the new writer as soon as it answers. */
#define FAILOVER_RETRY (USEC_PER_SEC / 4)

bool pool_in_backoff(const struct pgt_pool *pool)
{
	if (pool->last_fail_time == 0)
		return false;
	usec_t retry = hosts_in_failover(pool->dbstate->hosts)
	                   ? PGT_MIN(FAILOVER_RETRY, pgt.cfg->server_login_retry)
	                   : pgt.cfg->server_login_retry;
	return loop_now() - pool->last_fail_time < retry;
}

static void make_room(struct pgt_pool *pool, bool for_user);

static bool db_has_room(const struct pgt_pool *pool)
{
	int cap = config_db_max_connections(pgt.cfg, pool->db);
	return cap == 0 || pool->dbstate->nservers < cap;
}

/*
 * Open server connections for clients that wait.  from_queue: the pool was
 * just taken off the head of its database's slot queue and may use a free
 * slot; otherwise it may only when nobody is queued (no jumping the line).
 */
static int share_launch(struct pgt_pool *pool);

/* The user's max_user_connections holds the pool back (it wants more and
 * the user has no slot): keep it queued for one (at the tail once it got
 * some: round-robin), else off the queue.  Returns whether it is held. */
static bool user_queue(struct pgt_pool *pool, bool wants_more, int launched)
{
	bool held = wants_more && !user_has_room(pool);
	if (held) {
		if (!list_empty(&pool->user_slot_node) && launched)
			list_del(&pool->user_slot_node);
		if (list_empty(&pool->user_slot_node))
			list_append(&pool->ustate->slot_waiters, &pool->user_slot_node);
	} else if (!list_empty(&pool->user_slot_node)) {
		list_del(&pool->user_slot_node);
	}
	return held;
}

static int launch_some(struct pgt_pool *pool, bool from_queue)
{
	if (pool_in_backoff(pool) || pgt.shutting_down || pool_paused(pool))
		return 0;
	if (pool->shared)
		return share_launch(pool);
	int want = pool->nwaiting + pool->internal_want;
	if (!pool->welcome_ready && !list_empty(&pool->welcome_clients))
		want = PGT_MAX(want, 1);
	/* a connection being checked comes back soon, as one logging in does */
	int nlogin = list_count(&pool->login_servers) + pool->nchecking;
	int limit = pool_size_limit(pool);
	if (pool->full_until && loop_now() < pool->full_until)
		limit = PGT_MIN(limit, pool->nservers); /* the server said it has no slot for us */
	struct list *first = list_first(&pool->waiting_clients);
	if (first) {
		struct pgt_client *c = container_of(first, struct pgt_client, node);
		int reserve = pool_reserve_size(pool);
		if (reserve > 0 && loop_now() - c->wait_start >= pgt.cfg->reserve_pool_timeout)
			limit += reserve;
	}
	struct list *queue = &pool->dbstate->slot_waiters;
	bool queued_ahead = !from_queue && !list_empty(queue) && list_first(queue) != &pool->slot_node;
	int launched = 0;
	while (!queued_ahead && nlogin < want && pool->nservers < limit && db_has_room(pool) &&
	       user_has_room(pool)) {
		server_launch(pool);
		nlogin++;
		launched++;
	}
	bool more = nlogin < want && pool->nservers < limit;
	bool user_full = user_queue(pool, more, launched);
	if (more && (queued_ahead || !db_has_room(pool))) {
		/* the database entry is full: queue (at the tail: round-robin) for a
		 * slot, and free one if another pool has an idle connection */
		if (!list_empty(&pool->slot_node) && launched)
			list_del(&pool->slot_node);
		if (list_empty(&pool->slot_node))
			list_append(queue, &pool->slot_node);
		make_room(pool, false);
	} else if (!list_empty(&pool->slot_node)) {
		list_del(&pool->slot_node); /* served */
	}
	if (user_full && !user_has_room(pool))
		make_room(pool, true);
	return launched;
}

void pool_maybe_launch(struct pgt_pool *pool)
{
	launch_some(pool, false);
}

/* ---- shared pools ----
 *
 * A shared tenant pool holds a connection only while one of its clients is
 * linked to it (or it drains): borrowed from the reservoir's idle ones, or
 * opened for it when the reservoir has none and is below the entry's
 * pool_size, and handed back once released.  It never holds more than the
 * tenant's pool_size at once.  A tenant that finds the reservoir empty and
 * full waits in its queue, and released connections go to those tenants in
 * turn before the releasing tenant's own next client, so a busy tenant
 * cannot keep them.  A connection moved to another tenant gets the full
 * reset (DISCARD ALL) and that tenant's pin in front of its client's first
 * message; the pin is not in its startup options (those carry an empty
 * search_path and tenant setting, which is what RESET returns to). */

/* Move an idle (or just released) connection to another pool of its
 * reservoir.  False if it was closed instead (its backend changed). */
static bool share_move(struct pgt_server *s, struct pgt_pool *to)
{
	struct pgt_pool *from = s->pool;
	if (s->generation != from->generation || s->close_needed) {
		server_close(s, s->close_needed ? "close requested" : "backend changed");
		return false;
	}
	list_del(&s->node);
	from->nservers--;
	to->nservers++;
	s->pool = to;
	s->generation = to->generation;
	list_append(&to->idle_servers, &s->node);
	if (!to->reservoir && (s->last_pool != to || s->last_tenant != to->hash))
		s->moved = true;
	return true;
}

/* The first tenant pool in line that can take a connection now. */
static struct pgt_pool *share_waiter(struct pgt_pool *r)
{
	struct list *f;
	while ((f = list_first(&r->share_waiters)) != NULL) {
		struct pgt_pool *w = container_of(f, struct pgt_pool, share_node);
		if (w->shared && w->nwaiting > 0 && w->nservers < pool_size_limit(w) && !pool_paused(w))
			return w;
		list_del(&w->share_node);
	}
	return NULL;
}

static void share_queue(struct pgt_pool *p)
{
	if (list_empty(&p->share_node))
		list_append(&p->res->share_waiters, &p->share_node);
}

static void serve_or_idle(struct pgt_pool *pool, struct pgt_server *s);

static int share_launch(struct pgt_pool *pool)
{
	struct pgt_pool *r = pool->res;
	if (!pool->welcome_ready && r->welcome_ready)
		refresh_mode(pool); /* takes the reservoir's server parameters */
	int limit = pool_size_limit(pool);
	struct list *l;
	/* idle connections first (after a RESUME, or a release nobody took) */
	while (pool->nwaiting > 0 && pool->nservers < limit && (l = list_last(&r->idle_servers)) != NULL) {
		struct pgt_server *s = container_of(l, struct pgt_server, node);
		if (share_move(s, pool))
			serve_or_idle(pool, s);
	}
	int want = pool->nwaiting;
	if (!pool->welcome_ready && pool->nwelcome) {
		if (r->share_total > 0 && pool->nwaiting == 0) {
			/* a shared connection is logging in: its parameters will do
			 * (pool_share_welcome), no login of this tenant's own */
			share_queue(pool);
			return 0;
		}
		want = PGT_MAX(want, 1);
	}
	int nlogin = list_count(&pool->login_servers), launched = 0;
	int cap = reservoir_size(r);
	while (nlogin < want && pool->nservers < limit && r->share_total < cap && db_has_room(pool) &&
	       user_has_room(pool)) {
		server_launch(pool);
		nlogin++;
		launched++;
	}
	if (nlogin < want && pool->nservers < limit)
		share_queue(pool);
	if (user_queue(pool, nlogin < want && pool->nservers < limit, launched))
		make_room(pool, true);
	return launched;
}

void pool_share_welcome(struct pgt_pool *r)
{
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &r->share_waiters) {
		struct pgt_pool *w = container_of(i, struct pgt_pool, share_node);
		if (w->welcome_ready || !w->shared)
			continue;
		refresh_mode(w); /* takes the reservoir's server parameters, welcomes its clients */
		if (w->nwaiting == 0)
			list_del(&w->share_node);
	}
}

void pool_share_freed(struct pgt_pool *r)
{
	int cap = reservoir_size(r), guard = 0;
	struct pgt_pool *w;
	while (r->share_total < cap && (w = share_waiter(r)) != NULL && guard++ < 1000) {
		list_del(&w->share_node);
		if (share_launch(w) == 0)
			break;
	}
}

/* An idle connection of the reservoir for c's shared pool (the one c had
 * last, if it is there), moved to the pool; NULL if none or the tenant
 * holds its pool_size already. */
static struct pgt_server *share_borrow(struct pgt_pool *pool, struct pgt_client *c)
{
	struct pgt_pool *r = pool->res;
	if (pool->nservers >= pool_size_limit(pool) || list_empty(&r->idle_servers))
		return NULL;
	struct pgt_server *s = c->last_server;
	if (!s || s->affine != c || s->pool != r || s->state != SV_IDLE)
		s = container_of(list_last(&r->idle_servers), struct pgt_server, node);
	return share_move(s, pool) ? s : NULL;
}

/* Close the longest-idle server connection of another pool of the same
 * database entry (for_user: of the same server user), if any (its slot
 * then goes to the first waiting pool).  Looks at the server connections,
 * not at the pools: with 10,000 tenants it costs the same. */
static void make_room(struct pgt_pool *pool, bool for_user)
{
	struct pgt_server *victim = NULL;
	usec_t now = loop_coarse_now();
	struct list *i;
	list_for_each (i, &pgt_all_servers) {
		struct pgt_server *s = container_of(i, struct pgt_server, conn_all_node);
		struct pgt_pool *p = s->pool;
		/* an idle connection of a pool holding more than the asking one (a
		 * pool with none gets one), or of a pool nobody waits in that has
		 * not used it for a second; never below a pool's min_pool_size */
		if (s->state != SV_IDLE || p == pool ||
		    (for_user ? p->ustate != pool->ustate : p->dbstate != pool->dbstate) ||
		    p->nservers <= pool_min_size(p) ||
		    (p->nservers <= pool->nservers &&
		     (p->nwaiting > 0 || now - s->idle_since < USEC_PER_SEC)))
			continue;
		if (!victim || s->idle_since < victim->idle_since)
			victim = s;
	}
	if (victim)
		server_close(victim, for_user ? "max_user_connections reached: making room for another pool"
		                              : "max_db_connections reached: making room for another pool");
}

void pool_slot_freed(struct pgt_dbstate *d)
{
	struct list *f;
	int guard = 0;
	while ((f = list_first(&d->slot_waiters)) != NULL && guard++ < 1000) {
		struct pgt_pool *p = container_of(f, struct pgt_pool, slot_node);
		if (!db_has_room(p))
			return;
		list_del(&p->slot_node);
		launch_some(p, true);
	}
}

void pool_user_slot_freed(struct pgt_user_state *u)
{
	struct list *f;
	int guard = 0;
	while ((f = list_first(&u->slot_waiters)) != NULL && guard++ < 1000) {
		struct pgt_pool *p = container_of(f, struct pgt_pool, user_slot_node);
		if (!user_has_room(p))
			return;
		list_del(&p->user_slot_node);
		launch_some(p, false);
	}
}

const char *pool_should_yield(const struct pgt_pool *pool)
{
	/* hand over only while this pool holds more than its share, so that two
	 * busy pools settle on an even split instead of trading connections */
	struct list *f = list_first(&pool->dbstate->slot_waiters);
	if (f && !db_has_room(pool)) {
		const struct pgt_pool *next = container_of(f, struct pgt_pool, slot_node);
		if (next != pool && pool->nservers > next->nservers + 1)
			return "yielding the connection slot to a waiting pool (max_db_connections)";
	}
	f = list_first(&pool->ustate->slot_waiters);
	if (f && !user_has_room(pool)) {
		const struct pgt_pool *next = container_of(f, struct pgt_pool, user_slot_node);
		if (next != pool && (next->nwaiting > 0 || next->nwelcome > 0) &&
		    pool->nservers > next->nservers + 1)
			return "yielding the connection slot to a waiting pool (max_user_connections)";
	}
	return NULL;
}

bool pool_paused(const struct pgt_pool *pool)
{
	return pgt_paused_all || pool->dbstate->paused;
}

void pool_kick(struct pgt_pool *pool)
{
	struct list *l;
	while (!pool_paused(pool) && pool->nwaiting > 0 && (l = list_last(&pool->idle_servers)) != NULL)
		pool_server_ready(pool, container_of(l, struct pgt_server, node));
	pool_maybe_launch(pool);
}

/*
 * Session mode keys its server connections by the startup parameters of
 * the client they were opened for (application_name aside, which is SET):
 * a client gets a connection opened with its own parameters, so that RESET
 * returns to the values it connected with, as on PostgreSQL.  The
 * connections of all keys share the pool's size and quotas; a key without
 * an idle connection gets one opened, closing an idle one of another key
 * when the pool is full.
 */
static bool keyed(const struct pgt_pool *pool)
{
	return pool_mode(pool) == PGT_POOL_SESSION && !pool->internal && !pool->base_disabled &&
	       pool->welcome_ready && !pool->replication;
}

uint64_t pool_session_key(const struct pgt_client *c)
{
	return vars_hash_without(&c->vars, "application_name");
}

static bool key_matches(const struct pgt_pool *pool, const struct pgt_server *s, const struct pgt_client *c)
{
	return !keyed(pool) || s->base.hash == pool_session_key(c);
}

/* An idle connection for c: the most recently used one of its key. */
static struct pgt_server *idle_for(struct pgt_pool *pool, const struct pgt_client *c)
{
	struct list *l;
	for (l = pool->idle_servers.prev; l != &pool->idle_servers; l = l->prev) {
		struct pgt_server *s = container_of(l, struct pgt_server, node);
		if (key_matches(pool, s, c))
			return s;
	}
	return NULL;
}

/* The pool is full and c's key has no idle connection: close the longest
 * idle one of another key, so that one of c's can be opened. */
static void make_room_for_key(struct pgt_pool *pool)
{
	if (!keyed(pool) || pool->nservers < pool_size_limit(pool))
		return;
	struct list *f = list_first(&pool->idle_servers);
	if (f)
		server_close(container_of(f, struct pgt_server, node),
		             "session mode: making room for a client with other startup parameters");
}

struct pgt_server *pool_assign(struct pgt_pool *pool, struct pgt_client *c)
{
	if (list_empty(&pool->waiting_clients) && !pool_paused(pool)) {
		struct pgt_server *s = c->last_server;
		if (!s || s->affine != c || s->state != SV_IDLE || s->pool != pool)
			s = idle_for(pool, c);
		if (s && !pool->shared) {
			/* one idle longer than server_check_delay is checked first:
			 * the client waits for it (or another) like for a login */
			while (s && server_check_due(s)) {
				server_start_check(s);
				s = idle_for(pool, c);
			}
		}
		if (!s && pool->shared) {
			s = share_borrow(pool, c);
			if (s && server_check_due(s)) {
				/* checked as a connection of this tenant's pool: it comes
				 * back through pool_server_ready to the client waiting */
				server_start_check(s);
				s = NULL;
			}
		}
		if (s) {
			if (!server_link(s, c))
				return NULL;
			client_linked(c, s);
			return s;
		}
	}
	if (pool->nservers == 0 && pool_in_backoff(pool) && !hosts_in_failover(pool->dbstate->hosts)) {
		client_fail(c, "08006", "server connection failed: %s", pool->last_error);
		return NULL;
	}
	c->wait_start = loop_now();
	client_set_state(c, CL_WAITING, &pool->waiting_clients);
	make_room_for_key(pool);
	pool_maybe_launch(pool);
	return NULL;
}

void pool_server_ready(struct pgt_pool *pool, struct pgt_server *s)
{
	if (pool->shared && !pgt.shutting_down) {
		/* a borrowed connection: to the next tenant in line, else to this
		 * tenant's next client, else back to the reservoir */
		struct pgt_pool *r = pool->res, *w = share_waiter(r);
		if (w && w != pool) {
			list_del(&w->share_node);
			if (!share_move(s, w))
				return;
			if (pool->nwaiting > 0)
				share_queue(pool);
			serve_or_idle(w, s);
			return;
		}
		if (pool->nwaiting == 0 || pool_paused(pool)) {
			if (share_move(s, r))
				serve_or_idle(r, s);
			return;
		}
	}
	serve_or_idle(pool, s);
}

static void serve_or_idle(struct pgt_pool *pool, struct pgt_server *s)
{
	s->idle_since = loop_coarse_now();
	if (pool->internal) {
		list_del(&s->node);
		s->state = SV_ACTIVE;
		list_append(&pool->active_servers, &s->node);
		if (lookup_server_ready(s))
			return;
	}
	struct list *first = list_first(&pool->waiting_clients);
	if (first && !pgt.shutting_down && !pool_paused(pool)) {
		/* the first waiting client of the connection's key (session mode;
		 * otherwise simply the first) */
		struct list *i;
		list_for_each (i, &pool->waiting_clients) {
			struct pgt_client *c = container_of(i, struct pgt_client, node);
			if (!key_matches(pool, s, c))
				continue;
			if (!server_link(s, c))
				return;
			client_linked(c, s);
			if (pool->shared && pool->nwaiting > 0 && pool->nservers < pool_size_limit(pool))
				share_queue(pool); /* its turn again after the others */
			return;
		}
		if (pool->nservers >= pool_size_limit(pool)) {
			/* nobody waits for this key, and the pool is full */
			server_close(s,
			             "session mode: making room for a client with other startup parameters");
			return;
		}
	}
	list_del(&s->node);
	s->state = SV_IDLE;
	list_append(&pool->idle_servers, &s->node);
	sbuf_update_events_idle(&s->conn, NULL);
	if (first && keyed(pool))
		pool_maybe_launch(pool);
}

void pool_server_limit(struct pgt_pool *pool, const char *reason)
{
	usec_t now = loop_now();
	if (!pool->full_until || now >= pool->full_until)
		log_info("pool %s/%s%s%s full at %d server connections (the server said: %s); clients wait",
		         pool->dbname, pool->user, pool->tenant[0] ? "/" : "", pool->tenant,
		         pool->nservers - 1, reason);
	pool->full_until = now + USEC_PER_SEC;
}

void pool_login_failed(struct pgt_pool *pool, const char *reason)
{
	pool->last_fail_time = loop_now();
	snprintf(pool->last_error, sizeof(pool->last_error), "%s", reason);
	if (hosts_in_failover(pool->dbstate->hosts)) {
		/* the writer is moving: its clients wait for the new one (as long
		 * as query_wait_timeout lets them), tried again every 250 ms */
		janitor_wake();
		return;
	}
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &pool->welcome_clients) {
		struct pgt_client *c = container_of(i, struct pgt_client, node);
		client_fail(c, "08006", "server connection failed: %s", reason);
	}
	if (pool->nservers == 0) {
		list_for_each_safe (i, tmp, &pool->waiting_clients) {
			struct pgt_client *c = container_of(i, struct pgt_client, node);
			client_fail(c, "08006", "server connection failed: %s", reason);
		}
	}
}

/* p has no client and no server connection. */
static void pool_free(struct pgt_pool *p)
{
	list_del(&p->node);
	list_del(&p->tenant_node);
	list_del(&p->share_node);
	list_del(&p->wait_node);
	if (p->shared)
		p->res->nsharers--;
	list_del(&p->user_slot_node);
	user_state_release(p->ustate);
	pool_unindex(p);
	if (!p->welcome_borrowed)
		vars_free(&p->welcome);
	vars_free(&p->pin);
	if (p->removed_db)
		config_db_free(p->removed_db);
	free(p->dbname);
	free(p->user);
	free(p->tenant);
	free(p->db_dbname);
	free(p);
}

/* Pools of databases that exist only through the "*" entry (any name a
 * client asks for) would otherwise pile up: one per name ever asked, even
 * a nonexistent one.  Like PgBouncer's autodb_idle_timeout. */
void pool_drop_unused(usec_t now)
{
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal || strcmp(p->db->name, "*") != 0 || strcmp(p->dbname, "*") == 0 ||
		    (p->reservoir && p->nsharers > 0))
			continue;
		if (pool_clients(p) > 0 || p->nservers > 0 || !list_empty(&p->slot_node)) {
			p->empty_since = 0;
			continue;
		}
		if (!p->empty_since) {
			p->empty_since = now;
			continue;
		}
		if (now - p->empty_since < pgt.cfg->autodb_idle_timeout)
			continue;
		log_info("pool %s/%s%s%s dropped: unused for autodb_idle_timeout", p->dbname, p->user,
		         p->tenant[0] ? "/" : "", p->tenant);
		pool_free(p);
	}
}

bool pool_forget_tenant(struct list *tenant_pools)
{
	struct list *i, *tmp;
	bool all = true;
	list_for_each (i, tenant_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, tenant_node);
		if (pool_clients(p) > 0 || !list_empty(&p->slot_node))
			return false;
		struct list *j, *jt;
		list_for_each_safe (j, jt, &p->idle_servers)
			server_close(container_of(j, struct pgt_server, node),
			             "tenant forgotten: no client for tenant_idle_timeout");
		all &= p->nservers == 0;
	}
	if (!all)
		return false;
	list_for_each_safe (i, tmp, tenant_pools)
		pool_free(container_of(i, struct pgt_pool, tenant_node));
	return true;
}

int pool_clients(const struct pgt_pool *pool)
{
	return pool->nactive + pool->nwaiting + pool->nwelcome;
}

/* Called before the old config is freed, so p->db is still valid here. */
void pool_config_changed(void)
{
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		const struct pgt_database *db = config_find_db(pgt.cfg, p->dbname);
		p->tconf = p->tenant[0] ? config_find_tenant(pgt.cfg, p->tenant) : NULL;
		p->uconf = config_find_user(pgt.cfg, p->user);
		if (!db) {
			/* removed: keep serving the clients already in with the old
			 * entry, refuse new ones (login finds no entry), and drain */
			if (!p->removed_db) {
				p->removed_db = config_db_copy(p->db);
				if (pool_clients(p) || p->nservers)
					log_info("database %s removed: pool %s/%s%s%s drains", p->dbname,
					         p->dbname, p->user, p->tenant[0] ? "/" : "", p->tenant);
			}
			p->db = p->removed_db;
			refresh_mode(p);
			continue;
		}
		if (p->removed_db) {
			config_db_free(p->removed_db);
			p->removed_db = NULL;
		}
		/* entries are re-created by every load: compare what reaches the server */
		hosts_sync(p->dbstate->hosts, p->dbstate->name, db);
		if (p->db_hosts_gen != p->dbstate->hosts->generation ||
		    strcmp(db->dbname ? db->dbname : p->dbname, p->db_dbname) != 0) {
			p->generation++;
		}
		p->db = db;
		refresh_mode(p);
		pool_remember_backend(p);
	}
}

void pool_remember_backend(struct pgt_pool *p)
{
	free(p->db_dbname);
	p->db_hosts_gen = p->dbstate->hosts->generation;
	p->db_dbname = xstrdup(pool_backend_dbname(p));
}

void pool_check_idle(struct pgt_server *s, usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	struct pgt_pool *pool = s->pool;
	const char *why = NULL;
	if (s->generation != pool->generation)
		why = "backend changed";
	else if (pool->removed_db && pool_clients(pool) == 0)
		why = "database removed by a reload, no client left";
	else if (s->close_needed)
		why = "close requested";
	else if (cfg->server_lifetime > 0 && now - s->conn.connect_time > cfg->server_lifetime)
		why = "server_lifetime";
	else if (cfg->server_idle_timeout > 0 && now - s->idle_since > cfg->server_idle_timeout &&
	         pool->nservers > pool_min_size(pool))
		why = "server_idle_timeout";
	else if (pool->nservers > pool_size_limit(pool) && list_empty(&pool->waiting_clients))
		why = "pool_size reduced";
	else if (pool->reservoir && pool->nsharers == 0)
		why = "no tenant uses the shared pool any more";
	if (why)
		server_close(s, why);
}

void pool_maintain(struct pgt_pool *pool)
{
	int min = pool_min_size(pool);
	if (!pool->removed_db && !pool->shared && pool->nservers < min && !pool_in_backoff(pool) &&
	    db_has_room(pool) && user_has_room(pool) && !pgt.shutting_down && pool->welcome_ready)
		server_launch(pool);
	if (!list_empty(&pool->waiting_clients) || (!pool->welcome_ready && pool->nwelcome))
		pool_maybe_launch(pool);
}

int pool_total_busy(void)
{
	int n = 0;
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		n += list_count(&p->active_servers) + list_count(&p->used_servers);
	}
	return n;
}
