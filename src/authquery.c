/*
 * auth_query lookups and the cache of their answers (see authquery.h).
 *
 * An entry per (lookup database, user) holds the secret last found and, once
 * a client has proved a SCRAM secret, the ClientKey for server logins.  At
 * most one lookup per entry is in flight; logins that need it wait on it.
 * A lookup is queued in the internal pool of (lookup database, auth_user),
 * whose tenant name "*auth*" no real tenant can take; when one of its server
 * connections is ready it sends Parse/Bind/Execute/Sync with the user name
 * bound as $1 and takes the second column of the first row (PgBouncer's
 * "usename, passwd"), or the only column of a one-column answer.
 *
 * Negative answers are not kept (an entry without a secret is freed), so that
 * names that do not exist cost no memory, and a role created a moment after
 * a failed attempt can log in at once.
 */
#include "authquery.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "config.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "userlist.h"

uint64_t authq_lookups, authq_failures;

struct authq_entry {
	struct authq_entry *hnext; /* first: util_rehash's chain */
	uint64_t hash;
	char *dbname, *user;
	char *secret; /* the last answer; NULL = none yet */
	usec_t fetched;
	bool fresh_ok; /* secret may be used without asking again (until fetched + ttl) */
	bool has_keys; /* a client proved the secret: client_key/keys are usable */
	struct scram_secret keys;
	uint8_t client_key[SCRAM_KEY_LEN];
	struct authq_lookup *lookup; /* in flight or queued */
};

struct authq_lookup {
	struct list node; /* on the queue until a server takes it */
	struct authq_entry *e;
	struct pgt_pool *pool;
	char *query;
	struct authq_waiter *waiters;
	bool got_row;
	char *secret;
	char *error;
};

static struct list queue = {&queue, &queue};
static struct {
	struct authq_entry **b;
	uint32_t nb, n;
} tab;

static uint64_t entry_hash(const void *node)
{
	return ((const struct authq_entry *)node)->hash;
}

static uint64_t key_hash(const char *dbname, const char *user)
{
	return util_hash_str(dbname) * 31 ^ util_hash_str(user);
}

/* The effective settings of db (a [databases] entry's, else the global ones). */
static const char *eff(const char *dbval, const char *global)
{
	return dbval ? dbval : global;
}

/* Where the lookups for logins to (db, dbname) run. */
static const char *lookup_dbname(const struct pgt_database *db, const char *dbname)
{
	const char *a = eff(db->auth_dbname, pgt.cfg->auth_dbname);
	return a && *a ? a : dbname;
}

bool authq_applies(const struct pgt_database *db, const char *user)
{
	if (!db)
		return false;
	const char *au = eff(db->auth_user, pgt.cfg->auth_user);
	return au && *au && !userlist_find(pgt.cfg->users, user);
}

static struct authq_entry *entry_find(const char *dbname, const char *user)
{
	if (!tab.nb)
		return NULL;
	uint64_t h = key_hash(dbname, user);
	for (struct authq_entry *e = tab.b[h & (tab.nb - 1)]; e; e = e->hnext)
		if (e->hash == h && strcmp(e->dbname, dbname) == 0 && strcmp(e->user, user) == 0)
			return e;
	return NULL;
}

static struct authq_entry *entry_get(const char *dbname, const char *user)
{
	struct authq_entry *e = entry_find(dbname, user);
	if (e)
		return e;
	if (tab.n + 1 > tab.nb / 2) {
		uint32_t nb = tab.nb ? tab.nb * 2 : 64;
		tab.b = (struct authq_entry **)util_rehash((void **)tab.b, tab.nb, nb, entry_hash);
		tab.nb = nb;
	}
	e = xcalloc(1, sizeof(*e));
	e->dbname = xstrdup(dbname);
	e->user = xstrdup(user);
	e->hash = key_hash(dbname, user);
	e->hnext = tab.b[e->hash & (tab.nb - 1)];
	tab.b[e->hash & (tab.nb - 1)] = e;
	tab.n++;
	return e;
}

static void wipe_str(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

static void entry_free(struct authq_entry *e)
{
	struct authq_entry **pp = &tab.b[e->hash & (tab.nb - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	tab.n--;
	wipe_str(e->secret);
	OPENSSL_cleanse(e->client_key, sizeof(e->client_key));
	OPENSSL_cleanse(&e->keys, sizeof(e->keys));
	free(e->dbname);
	free(e->user);
	free(e);
}

/* Keep e only while it knows something worth keeping. */
static void entry_maybe_free(struct authq_entry *e)
{
	if (!e->lookup && !e->secret && !e->has_keys)
		entry_free(e);
}

static bool fresh(const struct authq_entry *e)
{
	return e->secret && e->fresh_ok && loop_now() - e->fetched < pgt.cfg->auth_query_cache_ttl;
}

static void lookup_finish(struct authq_lookup *l)
{
	struct authq_entry *e = l->e;
	e->lookup = NULL;
	if (!l->error) {
		if (!l->secret || !e->secret || strcmp(l->secret, e->secret) != 0) {
			/* another secret: a ClientKey of the old one is useless */
			e->has_keys = false;
			OPENSSL_cleanse(e->client_key, sizeof(e->client_key));
		}
		wipe_str(e->secret);
		e->secret = l->secret;
		l->secret = NULL;
		e->fetched = loop_now();
		e->fresh_ok = true;
	} else {
		authq_failures++;
	}
	struct authq_waiter *w = l->waiters;
	l->waiters = NULL;
	/* the waiters' callbacks may close their clients (which unwait, a no-op
	 * once entry is NULL) but never touch the entry */
	char *secret = e->secret && !l->error ? xstrdup(e->secret) : NULL;
	while (w) {
		struct authq_waiter *next = w->next;
		w->entry = NULL;
		w->next = NULL;
		w->done(w, l->error, secret);
		w = next;
	}
	wipe_str(secret);
	if (!list_empty(&l->node))
		list_del(&l->node);
	free(l->query);
	wipe_str(l->secret);
	free(l->error);
	free(l);
	entry_maybe_free(e);
}

int authq_secret(const struct pgt_database *db, const char *dbname, const char *user, struct authq_waiter *w,
                 const char **secret)
{
	const struct pgt_config *cfg = pgt.cfg;
	const char *ldb = lookup_dbname(db, dbname);
	struct authq_entry *e = entry_find(ldb, user);
	if (e && fresh(e)) {
		*secret = e->secret;
		return 1;
	}
	if (!e)
		e = entry_get(ldb, user);
	struct authq_lookup *l = e->lookup;
	if (!l) {
		const struct pgt_database *ldbe = config_find_db(cfg, ldb);
		if (!ldbe) {
			entry_maybe_free(e);
			*secret = NULL;
			return -1;
		}
		l = xcalloc(1, sizeof(*l));
		l->e = e;
		l->query = xstrdup(eff(db->auth_query, cfg->auth_query));
		l->pool = pool_get(ldb, ldbe, eff(db->auth_user, cfg->auth_user), "*auth*", 0);
		l->pool->internal = true;
		e->lookup = l;
		list_append(&queue, &l->node);
		l->pool->internal_want++;
		authq_lookups++;
		log_debug("auth_query: looking up user \"%s\" in database \"%s\"", user, ldb);
	}
	w->entry = e;
	w->next = l->waiters;
	l->waiters = w;
	/* an idle lookup connection may be waiting already */
	struct list *f = list_last(&l->pool->idle_servers);
	if (f && !list_empty(&l->node))
		pool_server_ready(l->pool, container_of(f, struct pgt_server, node));
	else
		pool_maybe_launch(l->pool);
	return 0;
}

void authq_unwait(struct authq_waiter *w)
{
	struct authq_entry *e = w->entry;
	if (!e)
		return;
	w->entry = NULL;
	if (!e->lookup)
		return;
	for (struct authq_waiter **pp = &e->lookup->waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	w->next = NULL;
}

void authq_client_key(const struct pgt_database *db, const char *dbname, const char *user, const char *secret,
                      const uint8_t client_key[SCRAM_KEY_LEN])
{
	struct authq_entry *e = entry_find(lookup_dbname(db, dbname), user);
	if (!e || !e->secret || strcmp(e->secret, secret) != 0)
		return; /* looked up again meanwhile: the next login brings the new key */
	if (!scram_parse_secret(e->secret, &e->keys))
		return;
	memcpy(e->client_key, client_key, SCRAM_KEY_LEN);
	e->has_keys = true;
}

void authq_forget(const struct pgt_database *db, const char *dbname, const char *user)
{
	struct authq_entry *e = entry_find(lookup_dbname(db, dbname), user);
	if (e)
		e->fresh_ok = false;
}

bool authq_server_creds(const struct pgt_pool *pool, struct authq_creds *out)
{
	memset(out, 0, sizeof(*out));
	if (pool->internal || !authq_applies(pool->db, pool->user))
		return false;
	struct authq_entry *e = entry_find(lookup_dbname(pool->db, pool->dbname), pool->user);
	if (!e || !e->secret)
		return false;
	if (strncmp(e->secret, "SCRAM-SHA-256$", 14) != 0) {
		out->password = xstrdup(e->secret); /* an md5 hash (or a plain password) */
		return true;
	}
	if (!e->has_keys)
		return false;
	out->passthrough = true;
	out->secret = e->keys;
	memcpy(out->client_key, e->client_key, SCRAM_KEY_LEN);
	return true;
}

bool authq_server_ready(struct pgt_server *s)
{
	struct list *i;
	list_for_each (i, &queue) {
		struct authq_lookup *l = container_of(i, struct authq_lookup, node);
		if (l->pool != s->pool)
			continue;
		list_del(&l->node);
		l->pool->internal_want--;
		struct pktbuf b;
		pktbuf_init(&b);
		pktbuf_ext_query(&b, l->query, l->e->user);
		bool ok = sbuf_send_raw(&s->conn, b.data, b.len);
		pktbuf_free(&b);
		s->auth_lookup = l;
		if (!ok)
			server_fail(s, "send failed"); /* fails the lookup's logins too */
		return true;
	}
	return false;
}

enum sbuf_verdict authq_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct authq_lookup *l = s->auth_lookup;
	if (!pkt->full)
		return SB_NEED_FULL;
	const uint8_t *body = pkt->data + 5;
	uint32_t len = pkt->total - 5;
	switch (pkt->type) {
	case 'D': {
		if (l->got_row)
			return SB_SKIP;
		l->got_row = true;
		struct proto_reader r;
		proto_reader_init(&r, body, len);
		uint16_t n = proto_get_u16(&r);
		for (int i = 0; i < n && !r.bad; i++) {
			int32_t cl = (int32_t)proto_get_u32(&r);
			const uint8_t *v = cl > 0 ? proto_get_bytes(&r, (size_t)cl) : NULL;
			if (r.bad)
				break;
			if (i == (n >= 2 ? 1 : 0) && v && !memchr(v, '\0', (size_t)cl))
				l->secret = xstrndup((const char *)v, (size_t)cl);
		}
		if (r.bad && !l->error)
			l->error = xstrdup("malformed row");
		return SB_SKIP;
	}
	case 'E': {
		const char *m = proto_error_field(body, len, 'M');
		if (!l->error)
			l->error = xstrdup(m ? m : "error");
		return SB_SKIP;
	}
	case 'Z':
		s->txn = (char)body[0];
		s->auth_lookup = NULL;
		if (l->error)
			log_warning("auth_query for user \"%s\" failed: %s", l->e->user, l->error);
		lookup_finish(l);
		if (s->conn.dead)
			return SB_GONE;
		pool_server_ready(s->pool, s);
		return s->conn.dead ? SB_GONE : SB_SKIP;
	default:
		return SB_SKIP;
	}
}

void authq_server_lost(struct pgt_server *s, const char *reason)
{
	struct authq_lookup *l = s->auth_lookup;
	if (l) {
		s->auth_lookup = NULL;
		if (!l->error)
			l->error = xstrdup(reason);
		lookup_finish(l);
	}
	/* lookups queued for a pool that cannot log in fail instead of waiting */
	if (s->state == SV_LOGIN && s->pool->nservers == 0) {
		struct list *i, *tmp;
		list_for_each_safe (i, tmp, &queue) {
			struct authq_lookup *q = container_of(i, struct authq_lookup, node);
			if (q->pool != s->pool)
				continue;
			list_del(&q->node);
			list_init(&q->node);
			q->pool->internal_want--;
			q->error = xstrdup(reason);
			lookup_finish(q);
		}
	}
}

void authq_config_changed(void)
{
	for (uint32_t i = 0; i < tab.nb; i++)
		for (struct authq_entry *e = tab.b[i]; e; e = e->hnext)
			e->fresh_ok = false;
}

void authq_shutdown(void)
{
	for (uint32_t i = 0; i < tab.nb; i++) {
		while (tab.b[i]) {
			struct authq_entry *e = tab.b[i];
			if (e->lookup) {
				/* its waiters are logins being torn down too */
				struct authq_lookup *l = e->lookup;
				for (struct authq_waiter *w = l->waiters; w; w = w->next)
					w->entry = NULL;
				if (!list_empty(&l->node))
					list_del(&l->node);
				free(l->query);
				wipe_str(l->secret);
				free(l->error);
				free(l);
				e->lookup = NULL;
			}
			entry_free(e);
		}
	}
	free(tab.b);
	tab.b = NULL;
	tab.nb = tab.n = 0;
}
