/*
 * auth_query lookups and the cache of their answers (see authquery.h).
 *
 * An entry per (lookup database, user) holds the secret last found and, once
 * a client has proved a SCRAM secret, the ClientKey for server logins.  At
 * most one lookup per entry is in flight; logins that need it wait on it.
 * A lookup (lookup.h) runs in the internal pool of (lookup database,
 * auth_user), whose tenant name "*auth*" no real tenant can take, with the
 * user name bound as $1, and takes the second column of the first row
 * (PgBouncer's "usename, passwd"), or the only column of a one-column
 * answer.
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
#include "lookup.h"
#include "loop.h"
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
	struct pgt_lookup base; /* first */
	struct authq_entry *e;
	char *query;
	struct authq_waiter *waiters;
	bool got_row;
	char *secret;
};

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

static void lookup_free(struct authq_lookup *l)
{
	free(l->query);
	wipe_str(l->secret);
	free(l->base.error);
	free(l);
}

static void lookup_done(struct pgt_lookup *base)
{
	struct authq_lookup *l = container_of(base, struct authq_lookup, base);
	const char *error = l->base.error;
	struct authq_entry *e = l->e;
	e->lookup = NULL;
	if (!error) {
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
		log_warning("auth_query for user \"%s\" failed: %s", e->user, error);
	}
	struct authq_waiter *w = l->waiters;
	l->waiters = NULL;
	/* the waiters' callbacks may close their clients (which unwait, a no-op
	 * once entry is NULL) but never touch the entry */
	char *secret = e->secret && !error ? xstrdup(e->secret) : NULL;
	while (w) {
		struct authq_waiter *next = w->next;
		w->entry = NULL;
		w->next = NULL;
		w->done(w, error, secret);
		w = next;
	}
	wipe_str(secret);
	lookup_free(l);
	entry_maybe_free(e);
}

static const char *lookup_sql(const struct pgt_lookup *base)
{
	return container_of(base, const struct authq_lookup, base)->query;
}

static const char *lookup_param(const struct pgt_lookup *base)
{
	return container_of(base, const struct authq_lookup, base)->e->user;
}

/* The secret: the second column of the first row ("usename, passwd"), or
 * the only column of a one-column answer; NULL = no such user. */
static void lookup_row(struct pgt_lookup *base, const uint8_t *body, uint32_t len)
{
	struct authq_lookup *l = container_of(base, struct authq_lookup, base);
	if (l->got_row)
		return;
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
	if (r.bad && !l->base.error)
		l->base.error = xstrdup("malformed row");
}

static const struct lookup_ops authq_ops = {
    .sql = lookup_sql, .param = lookup_param, .row = lookup_row, .done = lookup_done};

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
		l->base.pool = pool_get(ldb, ldbe, eff(db->auth_user, cfg->auth_user), "*auth*", 0);
		l->base.pool->internal = true;
		l->base.ops = &authq_ops;
		e->lookup = l;
		lookup_queue(&l->base);
		authq_lookups++;
		log_debug("auth_query: looking up user \"%s\" in database \"%s\"", user, ldb);
	}
	w->entry = e;
	w->next = l->waiters;
	l->waiters = w;
	lookup_kick(&l->base);
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
				lookup_cancel(&l->base);
				lookup_free(l);
				e->lookup = NULL;
			}
			entry_free(e);
		}
	}
	free(tab.b);
	tab.b = NULL;
	tab.nb = tab.n = 0;
}
