/*
 * Backend hosts of a database entry: resolution cache, roles, the order of
 * attempts, failover (see hosts.h).
 *
 * Why roles only order the attempts and never exclude an address: what was
 * seen of a server is history.  During a failover the standby that was
 * skipped a moment ago is the new primary; an address that refused a
 * connect may be back.  So a new connection tries the addresses believed
 * right first, unknown ones next, and those believed wrong (or down) last;
 * each attempt refreshes the belief.  A login that lands on the wrong role
 * hands the rest of its list to the next login (server.c), so one pass
 * over the list ends either on a right server or in a failure.
 */
#include "hosts.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "log.h"
#include "loop.h"
#include "server.h"

#define FAILOVER_MIN_INTERVAL USEC_PER_SEC
#define FAILOVER_RERESOLVE (USEC_PER_SEC / 5)

bool hosts_addr_equal(const union pgt_addr *a, const union pgt_addr *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_port == b->in.sin_port && a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
	if (a->sa.sa_family == AF_INET6)
		return a->in6.sin6_port == b->in6.sin6_port &&
		       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
	return false;
}

void hosts_addr_text(const union pgt_addr *a, char *out, size_t outlen)
{
	char ip[INET6_ADDRSTRLEN];
	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->in.sin_addr, ip, sizeof(ip));
		snprintf(out, outlen, "%s:%u", ip, ntohs(a->in.sin_port));
	} else if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip));
		snprintf(out, outlen, "[%s]:%u", ip, ntohs(a->in6.sin6_port));
	} else {
		snprintf(out, outlen, "unix");
	}
}

/* A lookup in flight is left to finish: its answer, of an older
 * generation, is dropped (and its argument freed) by resolved_cb. */
static void host_clear(struct pgt_host *h)
{
	free(h->name);
	memset(h, 0, sizeof(*h));
}

static bool same_hosts(const struct pgt_hostset *hs, const struct pgt_database *db)
{
	if (hs->n != db->nhosts)
		return false;
	for (int i = 0; i < hs->n; i++) {
		const char *a = hs->h[i].name, *b = db->hosts[i];
		if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0) || hs->h[i].port != db->ports[i])
			return false;
	}
	return true;
}

void hosts_sync(struct pgt_hostset *hs, const char *dbname, const struct pgt_database *db)
{
	if (!hs->waiters.next)
		list_init(&hs->waiters);
	hs->dbname = dbname;
	hs->tsa = db->target_session_attrs;
	hs->lbh = db->load_balance_hosts;
	if (same_hosts(hs, db))
		return;
	for (int i = 0; i < hs->n; i++)
		host_clear(&hs->h[i]);
	hs->n = db->nhosts;
	for (int i = 0; i < hs->n; i++) {
		struct pgt_host *h = &hs->h[i];
		h->name = db->hosts[i] ? xstrdup(db->hosts[i]) : NULL;
		h->port = db->ports[i];
		h->is_unix = !h->name || h->name[0] == '/';
		if (!h->is_unix) {
			uint8_t buf[16];
			h->numeric =
			    inet_pton(AF_INET, h->name, buf) == 1 || inet_pton(AF_INET6, h->name, buf) == 1;
		}
	}
	hs->nroles = 0;
	hs->generation++;
	/* logins waiting for the old names look again */
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &hs->waiters) {
		struct host_wait *w = container_of(i, struct host_wait, node);
		list_del(&w->node);
		list_init(&w->node);
		w->cb(w);
	}
}

void hosts_cancel_wait(struct host_wait *w)
{
	if (w->node.next && !list_empty(&w->node)) {
		list_del(&w->node);
		list_init(&w->node);
	}
}

/* ---- resolution ---- */

struct resolve_arg {
	struct pgt_hostset *hs;
	int idx;
	uint32_t generation;
};

static bool any_resolving(const struct pgt_hostset *hs)
{
	for (int i = 0; i < hs->n; i++)
		if (hs->h[i].resolving)
			return true;
	return false;
}

static void wake_waiters(struct pgt_hostset *hs)
{
	struct list ready;
	list_init(&ready);
	/* the callbacks may add waiters again: move the current ones first */
	while (!list_empty(&hs->waiters)) {
		struct list *f = list_first(&hs->waiters);
		list_del(f);
		list_append(&ready, f);
	}
	while (!list_empty(&ready)) {
		struct list *f = list_first(&ready);
		list_del(f);
		list_init(f);
		struct host_wait *w = container_of(f, struct host_wait, node);
		w->cb(w);
	}
}

static void resolved_cb(const struct dns_result *res, const char *error, void *arg)
{
	struct resolve_arg *ra = arg;
	struct pgt_hostset *hs = ra->hs;
	if (ra->generation != hs->generation || ra->idx >= hs->n) {
		free(ra);
		return;
	}
	struct pgt_host *h = &hs->h[ra->idx];
	free(ra);
	h->req = NULL;
	h->resolving = false;
	h->resolved = true;
	usec_t now = loop_now();
	h->resolved_at = now;
	if (!res || res->n == 0) {
		snprintf(h->error, sizeof(h->error), "%s", error ? error : "no address");
		h->naddr = 0;
		h->expires = now + pgt.cfg->dns_nxdomain_ttl;
		log_warning("database %s: could not resolve host %s: %s", hs->dbname, h->name, h->error);
	} else {
		bool changed = res->n != h->naddr;
		for (int i = 0; i < res->n; i++) {
			union pgt_addr a;
			memset(&a, 0, sizeof(a));
			memcpy(&a, &res->addr[i], res->len[i] <= sizeof(a) ? res->len[i] : sizeof(a));
			if (!changed && !hosts_addr_equal(&a, &h->addr[i]))
				changed = true;
			h->addr[i] = a;
			h->addrlen[i] = res->len[i] <= sizeof(a) ? res->len[i] : sizeof(a);
		}
		if (changed && h->naddr > 0) {
			char t[64];
			hosts_addr_text(&h->addr[0], t, sizeof(t));
			log_info("database %s: host %s now resolves to %s%s", hs->dbname, h->name, t,
			         res->n > 1 ? " (and more)" : "");
		}
		h->naddr = res->n;
		h->error[0] = '\0';
		h->expires = now + pgt.cfg->dns_max_ttl;
		/* during a failover, a name that moved takes its connections along */
		if (changed && hosts_in_failover(hs))
			server_close_moved(hs);
	}
	if (!any_resolving(hs))
		wake_waiters(hs);
}

static void resolve(struct pgt_hostset *hs, int idx)
{
	struct pgt_host *h = &hs->h[idx];
	if (h->resolving)
		return;
	struct resolve_arg *ra = xcalloc(1, sizeof(*ra));
	ra->hs = hs;
	ra->idx = idx;
	ra->generation = hs->generation;
	h->resolving = true;
	/* may answer at once (numeric, /etc/hosts): then resolved_cb ran */
	struct evdns_getaddrinfo_request *req = dns_resolve(h->name, h->port, resolved_cb, ra);
	if (h->resolving)
		h->req = req;
}

/* ---- roles ---- */

static struct addr_role *role_find(const struct pgt_hostset *hs, const union pgt_addr *a)
{
	for (int i = 0; i < hs->nroles; i++)
		if (hosts_addr_equal(&hs->roles[i].sa, a))
			return (struct addr_role *)&hs->roles[i];
	return NULL;
}

int hosts_get_role(const struct pgt_hostset *hs, const union pgt_addr *a)
{
	const struct addr_role *r = role_find(hs, a);
	return r ? r->role : HOST_ROLE_UNKNOWN;
}

void hosts_set_role(struct pgt_hostset *hs, const union pgt_addr *a, int role)
{
	if (a->sa.sa_family != AF_INET && a->sa.sa_family != AF_INET6)
		return;
	struct addr_role *r = role_find(hs, a);
	if (!r) {
		if (hs->nroles < HOSTS_MAX_CANDS) {
			r = &hs->roles[hs->nroles++];
		} else {
			/* the oldest belief goes */
			r = &hs->roles[0];
			for (int i = 1; i < hs->nroles; i++)
				if (hs->roles[i].at < r->at)
					r = &hs->roles[i];
		}
		r->sa = *a;
	}
	r->role = (uint8_t)role;
	r->at = loop_now();
}

int hosts_role_of(const char *in_hot_standby, const char *default_read_only)
{
	if (in_hot_standby && strcmp(in_hot_standby, "on") == 0)
		return HOST_ROLE_STANDBY;
	if (default_read_only && strcmp(default_read_only, "on") == 0)
		return HOST_ROLE_PRIMARY_RO;
	return HOST_ROLE_PRIMARY;
}

bool hosts_role_ok(int tsa, int role, bool fallback_pass)
{
	switch (tsa) {
	case PGT_TSA_READ_WRITE:
		return role == HOST_ROLE_PRIMARY;
	case PGT_TSA_READ_ONLY:
		return role == HOST_ROLE_STANDBY || role == HOST_ROLE_PRIMARY_RO;
	case PGT_TSA_PRIMARY:
		return role == HOST_ROLE_PRIMARY || role == HOST_ROLE_PRIMARY_RO;
	case PGT_TSA_STANDBY:
		return role == HOST_ROLE_STANDBY;
	case PGT_TSA_PREFER_STANDBY:
		return fallback_pass || role == HOST_ROLE_STANDBY;
	default:
		return true;
	}
}

/* 0: believed right, 1: unknown, 2: believed wrong or down */
static int cand_class(const struct pgt_hostset *hs, const struct host_cand *c)
{
	if (c->sa.sa.sa_family == AF_UNSPEC)
		return 1;
	int role = hosts_get_role(hs, &c->sa);
	if (role == HOST_ROLE_DOWN)
		return 2;
	if (role == HOST_ROLE_UNKNOWN)
		/* when spreading, an address not tried yet is as good as a right
		 * one (else the first right one would take every connection) */
		return hs->tsa == PGT_TSA_ANY || hs->lbh != PGT_LBH_DISABLE ? 0 : 1;
	return hosts_role_ok(hs->tsa, role, false) ? 0 : 2;
}

/* load_balance_hosts=random: spreading, not secrecy, so a xorshift seeded
 * once from the system's generator does */
static uint32_t rand_u32(void)
{
	static uint64_t x;
	if (!x && (!util_random(&x, sizeof(x)) || !x))
		x = (uint64_t)loop_now() | 1;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return (uint32_t)(x >> 32);
}

static void shuffle_u8(uint8_t *v, int n)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(rand_u32() % (uint32_t)(i + 1));
		uint8_t t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

bool hosts_pick(struct pgt_hostset *hs, struct host_cands *out, struct host_wait *w, const char **error)
{
	usec_t now = loop_now();
	*error = NULL;
	/* during a failover every attempt (4 a second at most) asks DNS anew:
	 * the name moves when the new writer is ready.  When spreading, a
	 * second's answer at most: a reader endpoint's DNS names one reader at
	 * a time (Aurora rotates them with a TTL of 1 s) */
	bool failover = hosts_in_failover(hs);
	usec_t ttl = hs->lbh != PGT_LBH_DISABLE ? PGT_MIN(pgt.cfg->dns_max_ttl, USEC_PER_SEC) : 0;
	for (int i = 0; i < hs->n; i++) {
		struct pgt_host *h = &hs->h[i];
		if (h->is_unix || (h->numeric && h->resolved))
			continue; /* an address: nothing to ask DNS again */
		if (!h->resolved || now >= h->expires || (ttl && now - h->resolved_at >= ttl) ||
		    (failover && now - h->resolved_at >= FAILOVER_RERESOLVE))
			resolve(hs, i);
	}
	if (any_resolving(hs)) {
		hosts_cancel_wait(w);
		list_append(&hs->waiters, &w->node);
		return false;
	}
	uint32_t turn = hs->lbh == PGT_LBH_ROUND_ROBIN ? hs->rr++ : 0;
	/* host order: as written, rotated (round-robin) or shuffled (random) */
	uint8_t order[PGT_MAX_HOSTS];
	for (int i = 0; i < hs->n; i++)
		order[i] = (uint8_t)i;
	if (hs->lbh == PGT_LBH_RANDOM) {
		shuffle_u8(order, hs->n);
	} else if (hs->lbh == PGT_LBH_ROUND_ROBIN && hs->n > 1) {
		uint32_t start = turn % (uint32_t)hs->n;
		for (int i = 0; i < hs->n; i++)
			order[i] = (uint8_t)((start + (uint32_t)i) % (uint32_t)hs->n);
	}
	out->n = 0;
	out->next = 0;
	out->fallback_pass = false;
	out->saw_fallback = false;
	out->generation = hs->generation;
	int naddrs_total = 0;
	for (int k = 0; k < hs->n; k++) {
		const struct pgt_host *h = &hs->h[order[k]];
		if (h->is_unix) {
			struct host_cand *c = &out->c[out->n++];
			memset(c, 0, sizeof(*c));
			c->sa.sa.sa_family = AF_UNSPEC;
			c->host = order[k];
			continue;
		}
		if (h->naddr == 0) {
			*error = h->error[0] ? h->error : "no address";
			continue;
		}
		uint8_t ao[DNS_MAX_ADDRS];
		for (int a = 0; a < h->naddr; a++)
			ao[a] = (uint8_t)a;
		if (hs->lbh == PGT_LBH_RANDOM)
			shuffle_u8(ao, h->naddr);
		for (int a = 0; a < h->naddr; a++) {
			struct host_cand *c = &out->c[out->n++];
			c->sa = h->addr[ao[a]];
			c->len = h->addrlen[ao[a]];
			c->host = order[k];
		}
		naddrs_total += h->naddr;
	}
	/* a name with several addresses (a reader endpoint) under round-robin:
	 * each address is a host of its own */
	if (hs->lbh == PGT_LBH_ROUND_ROBIN && out->n > hs->n && out->n > 1) {
		struct host_cand tmp[HOSTS_MAX_CANDS];
		int start = (int)(turn % (uint32_t)out->n);
		memcpy(tmp, out->c, sizeof(out->c[0]) * (size_t)out->n);
		for (int i = 0; i < out->n; i++)
			out->c[i] = tmp[(start + i) % out->n];
	}
	(void)naddrs_total;
	/* believed right first, unknown next, believed wrong or down last
	 * (a stable sort of at most 64) */
	if (hs->tsa != PGT_TSA_ANY || hs->nroles > 0) {
		struct host_cand sorted[HOSTS_MAX_CANDS];
		int m = 0;
		for (int cls = 0; cls < 3; cls++)
			for (int i = 0; i < out->n; i++)
				if (cand_class(hs, &out->c[i]) == cls)
					sorted[m++] = out->c[i];
		memcpy(out->c, sorted, sizeof(out->c[0]) * (size_t)m);
	}
	if (out->n > 0)
		*error = NULL;
	return true;
}

bool hosts_unix_addr(const struct pgt_hostset *hs, const struct host_cand *c, struct sockaddr_un *un,
                     socklen_t *len)
{
	const struct pgt_host *h = &hs->h[c->host];
	const char *dir = h->name && *h->name ? h->name : "/var/run/postgresql";
	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	if ((size_t)snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", dir, h->port) >=
	    sizeof(un->sun_path))
		return false;
	*len = sizeof(*un);
	return true;
}

/* ---- failover ---- */

bool hosts_failover(struct pgt_hostset *hs, const union pgt_addr *a, const char *why)
{
	usec_t now = loop_now();
	usec_t window = pgt.cfg->query_wait_timeout > 0 ? pgt.cfg->query_wait_timeout : 120 * USEC_PER_SEC;
	hs->failover_until = now + window;
	if (hs->last_failover && now - hs->last_failover < FAILOVER_MIN_INTERVAL)
		return false;
	hs->last_failover = now;
	hs->failovers++;
	char t[64];
	hosts_addr_text(a, t, sizeof(t));
	log_warning("database %s: %s (%s): resolving its hosts again, new connections go to a server "
	            "with target_session_attrs=%s",
	            hs->dbname, why, t, config_tsa_name(hs->tsa));
	/* the next login resolves again instead of trusting the cache */
	for (int i = 0; i < hs->n; i++)
		if (!hs->h[i].is_unix && !hs->h[i].resolving)
			hs->h[i].expires = now;
	return true;
}

bool hosts_watched(const struct pgt_hostset *hs)
{
	if (hs->tsa != PGT_TSA_ANY)
		return true;
	for (int i = 0; i < hs->n; i++)
		if (!hs->h[i].is_unix && !hs->h[i].numeric)
			return true;
	return false;
}

bool hosts_has_addr(const struct pgt_hostset *hs, const union pgt_addr *a)
{
	for (int i = 0; i < hs->n; i++)
		for (int k = 0; k < hs->h[i].naddr; k++)
			if (hosts_addr_equal(&hs->h[i].addr[k], a))
				return true;
	return false;
}

bool hosts_in_failover(const struct pgt_hostset *hs)
{
	return hs->failover_until && loop_now() < hs->failover_until;
}
