/*
 * Protocol-level prepared statements in transaction mode.
 *
 * Drivers prepare a statement once per connection (psycopg after five uses,
 * asyncpg and postgres.js at once, pgjdbc after five, pgbench -M prepared)
 * and then only Bind it.  In transaction mode the next transaction lands on
 * another server connection, where that name means nothing or something
 * else.  So in transaction mode (with max_prepared_statements > 0) a
 * client's named statements never reach a server under the client's names:
 *
 *  - Every distinct statement (query text and parameter types) is kept once,
 *    shared by all clients (`struct ps_stmt`), with a server-side name of
 *    its own (PS_SERVER_PREFIX + a number), so clients of one server
 *    connection that prepare the same text share one server statement.
 *  - Each client maps its own names to those statements (`struct
 *    ps_client`); each server connection knows which statements it has
 *    (`struct ps_server`), at most max_prepared_statements, the least
 *    recently used one closed to make room.
 *  - A client's Parse is answered from that: the statement is prepared on
 *    the current server connection if it lacks it (under the server-side
 *    name), else not sent at all.  A Bind, Describe or Close of a client's
 *    name is rewritten to the server-side name, after a Parse pgtenant puts
 *    in front of it when the connection lacks the statement.  The client's
 *    Close only forgets its name.
 *
 * The answers must look as they would from PostgreSQL: the ParseComplete of
 * a Parse pgtenant sent for itself is swallowed, a ParseComplete or
 * CloseComplete for a message it did not send is made up, in its place in
 * the answer stream.  For that every request sent to the server is queued
 * (one byte of kind, one pointer) and taken off when the message that ends
 * its answer arrives; made-up answers wait in the queue until everything
 * before them is answered.  An error makes the server skip everything up
 * to the next Sync: the queued requests up to it are taken off as skipped,
 * and what they registered is undone, so a failed Parse in a pipeline
 * leaves nothing behind, and a skipped eviction leaves the statement.  A
 * statement evicted in a Sync segment whose answers have not come yet may
 * then still be on the server: a later segment that prepares it again
 * closes it first.  While the server skips, even a Query the client sent
 * behind the error waits for the client's Sync, so the connection is not
 * between transactions (sent_since_rfq stays set); a Sync pgtenant sends
 * for a client that went away (ps_server_sync) ends the skipping as the
 * client's would.  Errors pgtenant must report itself (a name
 * prepared twice, an unknown name with pgtenant's prefix) are produced by
 * sending a message that surely fails and replacing the server's error by
 * the right one, so the server skips to the Sync as PostgreSQL would.
 *
 * A simple Query of a client that has no names, sent while nothing is
 * queued, is not queued either: only counted (s->ps_untracked, one less per
 * ReadyForQuery), so that a client that never prepares pays nothing per
 * message.  Such Queries are always the oldest requests in flight; when a
 * message that must be tracked follows them, they are queued first.  A
 * DISCARD ALL or DEALLOCATE ALL is seen by its tag whichever way it went
 * (ps_server_tag): it removes what was prepared before it, not the Parses
 * pipelined behind it; a client's names wait for the answer of a Query
 * that may be one of those (REQ_FORGET).
 *
 * Isolation does not rest on any of this: the hand-over reset (server.c)
 * either keeps only statements with pgtenant's prefix that came through the
 * protocol (never a client's SQL PREPARE) or discards everything, and
 * then these maps are forgotten.  If a client removes a statement behind
 * pgtenant's back (SQL DEALLOCATE of a pgtenant name), the server's error
 * marks the connection to be closed once released.
 */
#include "prepare.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "config.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "session.h"
#include "varcache.h"

/* ---- statements, shared by all clients ---- */

struct ps_stmt {
	struct ps_stmt *hnext;
	uint64_t hash, id;
	uint32_t refs, len;
	uint8_t namelen;
	uint8_t hint;   /* session.c's hint from the query text, for every Bind */
	char name[30];  /* PS_SERVER_PREFIX and the id */
	uint8_t body[]; /* Parse message after the name: query, parameter types */
};

static struct {
	struct ps_stmt **b;
	uint32_t nb, n;
	uint64_t next_id, bytes;
} reg;

static uint64_t hash_bytes(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

_Static_assert(offsetof(struct ps_stmt, hnext) == 0, "util_rehash needs the chain first");

static uint64_t stmt_hash(const void *node)
{
	return ((const struct ps_stmt *)node)->hash;
}

static void reg_grow(void)
{
	uint32_t nb = reg.nb ? reg.nb * 2 : 64;
	reg.b = (struct ps_stmt **)util_rehash((void **)reg.b, reg.nb, nb, stmt_hash);
	reg.nb = nb;
}

/* The shared statement for this Parse body, with a reference taken. */
static struct ps_stmt *stmt_get(const uint8_t *body, uint32_t len)
{
	uint64_t h = hash_bytes(body, len);
	if (reg.nb) {
		for (struct ps_stmt *st = reg.b[h & (reg.nb - 1)]; st; st = st->hnext) {
			if (st->hash == h && st->len == len && memcmp(st->body, body, len) == 0) {
				st->refs++;
				return st;
			}
		}
	}
	if (reg.n >= reg.nb)
		reg_grow();
	struct ps_stmt *st = xmalloc(sizeof(*st) + len);
	st->hash = h;
	st->id = ++reg.next_id;
	st->refs = 1;
	st->len = len;
	st->namelen = (uint8_t)snprintf(st->name, sizeof(st->name), "%s%llu", PS_SERVER_PREFIX,
	                                (unsigned long long)st->id);
	memcpy(st->body, body, len);
	st->hint = session_text_hint(body, len, NULL);
	st->hnext = reg.b[h & (reg.nb - 1)];
	reg.b[h & (reg.nb - 1)] = st;
	reg.n++;
	reg.bytes += len;
	return st;
}

static void stmt_unref(struct ps_stmt *st)
{
	if (--st->refs > 0)
		return;
	struct ps_stmt **pp = &reg.b[st->hash & (reg.nb - 1)];
	while (*pp != st)
		pp = &(*pp)->hnext;
	*pp = st->hnext;
	reg.n--;
	reg.bytes -= st->len;
	free(st);
}

void ps_mem_stats(uint64_t *stmts, uint64_t *bytes)
{
	*stmts = reg.n;
	*bytes = reg.bytes;
}

/* ---- a client's names ---- */

struct ps_cent {
	struct ps_cent *hnext;
	struct ps_stmt *st;
	uint32_t hash, refs; /* the map's reference, and one per queued request */
	uint32_t epoch;      /* the Sync segment of its Parse, while unanswered */
	bool in_map;
	bool pending; /* its Parse is not answered yet: it may still fail or be skipped */
	bool failed;  /* its Parse failed or was skipped: the name never existed */
	bool closing; /* a Close or DEALLOCATE of it is not answered yet (it stays
	               * in the map until then: skipped, it did not happen) */
	uint32_t close_epoch;
	uint32_t namelen;
	char name[];
};

/* The name's hash, and its length (compared before its bytes: a length
 * and a memcmp cost the same whatever the heap layout, where strcmp's
 * vector loads take a slow path near the end of a page). */
static uint32_t hash_name(const char *name, size_t *len)
{
	uint32_t h = 2166136261u;
	const char *s = name;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	*len = (size_t)(s - name);
	return h;
}

static void cent_unref(struct ps_cent *e)
{
	if (--e->refs > 0)
		return;
	stmt_unref(e->st);
	free(e);
}

_Static_assert(offsetof(struct ps_cent, hnext) == 0, "util_rehash needs the chain first");

static uint64_t cent_hash(const void *node)
{
	return ((const struct ps_cent *)node)->hash;
}

static void cmap_insert(struct ps_client *m, struct ps_cent *e)
{
	if (m->n >= m->nb) {
		uint32_t nb = m->nb ? m->nb * 2 : 16;
		m->b = (struct ps_cent **)util_rehash((void **)m->b, m->nb, nb, cent_hash);
		m->nb = nb;
	}
	e->hnext = m->b[e->hash & (m->nb - 1)];
	m->b[e->hash & (m->nb - 1)] = e;
	e->in_map = true;
	e->refs++;
	m->n++;
}

static void cmap_remove(struct ps_client *m, struct ps_cent *e)
{
	if (!e->in_map)
		return;
	struct ps_cent **pp = &m->b[e->hash & (m->nb - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->in_map = false;
	m->n--;
	cent_unref(e);
}

static void cmap_clear(struct ps_client *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->nb; i++) {
		for (struct ps_cent *e = m->b[i], *next; e; e = next) {
			next = e->hnext;
			e->in_map = false;
			cent_unref(e);
		}
		m->b[i] = NULL;
	}
	m->n = 0;
}

void ps_client_free(struct pgt_client *c)
{
	if (!c->ps)
		return;
	cmap_clear(c->ps);
	free(c->ps->b);
	free(c->ps);
	c->ps = NULL;
}

/* ---- a server connection's statements and its queue of requests ---- */

/* What pgtenant knows of a statement on the server, in stream order: its
 * Parse answered; sent in the current Sync segment (an error before it
 * would skip it, and everything after it up to the Sync); or not known (a
 * Parse or Close skipped after an error whose outcome cannot be told).  Only
 * the first two may be relied on; otherwise the statement is closed and
 * prepared again, which is right whatever the server has. */
enum { SENT_CONFIRMED, SENT_TENTATIVE, SENT_UNKNOWN };

struct ps_sent {
	struct ps_sent *hnext;
	struct list lru; /* least recently used first */
	struct ps_stmt *st;
	uint32_t epoch; /* the Sync segment of a tentative Parse */
	uint8_t state;
};

enum ps_kind {
	R_PARSE = 1, /* the client's Parse (p: its entry, NULL for the unnamed statement) */
	R_BIND,      /* p: non-NULL when rewritten to a server-side name */
	R_DESCRIBE,
	R_EXECUTE,
	R_CLOSE,
	R_SYNC,
	R_QUERY, /* p: non-NULL when pgtenant already acted on its effect */
	R_FUNCTION,
	R_OWN_PARSE,  /* pgtenant's Parse: its ParseComplete is swallowed (p: statement) */
	R_OWN_CLOSE,  /* pgtenant's Close of a statement it evicts (p: statement) */
	R_FAKE_PARSE, /* answer ParseComplete; nothing was sent (p: client entry) */
	R_FAKE_CLOSE, /* answer CloseComplete; nothing was sent (p: client entry or NULL) */
	R_FAIL,       /* a message sent to fail: its error is replaced (p: "SQLSTATE\0message") */
	R_DEALLOC_Q,  /* a Query: the client's DEALLOCATE of its name (p: client entry) */
	R_DEALLOC_P,  /* the same through the unnamed statement's Parse (p: client entry) */
};

struct ps_req {
	uint8_t kind;
	uint8_t flags;  /* REQ_* */
	uint32_t epoch; /* the Sync segment it was sent in */
	void *p;
};

#define REQ_REPREP 1        /* a Parse of a statement the server may have had: undo = "unknown" */
#define REQ_QUIET 2         /* a Close before such a Parse: nothing to undo */
#define REQ_WAS_CONFIRMED 4 /* an eviction of a statement known to be there */
#define REQ_FORGET 8        /* a Query that may be DEALLOCATE ALL or DISCARD ALL */
#define REQ_EVICT 16        /* an eviction's Close, in the evicted table until answered */

/* A client that pipelines without reading can queue this many requests;
 * then it is held until answers come back. */
#define PS_QUEUE_MAX 65536

static struct ps_server *ps_server_get(struct pgt_server *s)
{
	if (!s->ps) {
		s->ps = xcalloc(1, sizeof(*s->ps));
		list_init(&s->ps->lru);
	}
	return s->ps;
}

static struct ps_sent *smap_find(const struct ps_server *ps, const struct ps_stmt *st)
{
	if (!ps->nb)
		return NULL;
	for (struct ps_sent *e = ps->b[st->id & (ps->nb - 1)]; e; e = e->hnext)
		if (e->st == st)
			return e;
	return NULL;
}

_Static_assert(offsetof(struct ps_sent, hnext) == 0, "util_rehash needs the chain first");

static uint64_t sent_hash(const void *node)
{
	return ((const struct ps_sent *)node)->st->id;
}

static void smap_add(struct ps_server *ps, struct ps_stmt *st)
{
	if (ps->n >= ps->nb) {
		uint32_t nb = ps->nb ? ps->nb * 2 : 16;
		ps->b = (struct ps_sent **)util_rehash((void **)ps->b, ps->nb, nb, sent_hash);
		ps->nb = nb;
	}
	struct ps_sent *e = xmalloc(sizeof(*e));
	e->st = st;
	e->state = SENT_TENTATIVE;
	e->epoch = ps->epoch;
	st->refs++;
	e->hnext = ps->b[st->id & (ps->nb - 1)];
	ps->b[st->id & (ps->nb - 1)] = e;
	list_append(&ps->lru, &e->lru);
	ps->n++;
}

static void smap_del(struct ps_server *ps, struct ps_sent *e)
{
	struct ps_sent **pp = &ps->b[e->st->id & (ps->nb - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	list_del(&e->lru);
	stmt_unref(e->st);
	free(e);
	ps->n--;
}

static bool usable(const struct ps_server *ps, const struct ps_sent *e)
{
	return e->state == SENT_CONFIRMED || (e->state == SENT_TENTATIVE && e->epoch == ps->epoch);
}

/* A Parse of st was answered. */
static void smap_confirm(struct ps_server *ps, const struct ps_stmt *st)
{
	struct ps_sent *e = st ? smap_find(ps, st) : NULL;
	if (e)
		e->state = SENT_CONFIRMED;
}

/* A Parse of st (sent in segment r->epoch) failed or was skipped. */
static void smap_undo_parse(struct ps_server *ps, const struct ps_stmt *st, const struct ps_req *r)
{
	struct ps_sent *e = smap_find(ps, st);
	if (!e || e->state != SENT_TENTATIVE || e->epoch != r->epoch)
		return; /* since confirmed, or prepared again later */
	if (r->flags & REQ_REPREP)
		e->state = SENT_UNKNOWN;
	else
		smap_del(ps, e);
}

/* A statement evicted (its Close sent, not answered yet): until the answer
 * comes, an error before the Close in its Sync segment may still skip it,
 * so that the server keeps the statement.  Within that segment whatever
 * follows is skipped too; a later segment that prepares the statement again
 * closes it first (evicted_earlier()).  Only evictions make these. */
struct ps_evict {
	struct ps_evict *hnext;
	const struct ps_stmt *st; /* its R_OWN_CLOSE requests hold the references */
	uint32_t n;               /* its eviction Closes unanswered */
	uint32_t first;           /* the Sync segment of the oldest of them, or an earlier one */
	uint32_t last;            /* the Sync segment of the newest */
};

_Static_assert(offsetof(struct ps_evict, hnext) == 0, "util_rehash needs the chain first");

static uint64_t evict_hash(const void *node)
{
	return ((const struct ps_evict *)node)->st->id;
}

static struct ps_evict *evict_find(const struct ps_server *ps, const struct ps_stmt *st)
{
	if (!ps->en)
		return NULL;
	for (struct ps_evict *v = ps->eb[st->id & (ps->enb - 1)]; v; v = v->hnext)
		if (v->st == st)
			return v;
	return NULL;
}

static void evict_add(struct ps_server *ps, const struct ps_stmt *st)
{
	struct ps_evict *v = evict_find(ps, st);
	if (v) {
		v->n++;
		v->last = ps->epoch;
		return;
	}
	if (ps->en >= ps->enb) {
		uint32_t nb = ps->enb ? ps->enb * 2 : 16;
		ps->eb = (struct ps_evict **)util_rehash((void **)ps->eb, ps->enb, nb, evict_hash);
		ps->enb = nb;
	}
	v = xmalloc(sizeof(*v));
	v->st = st;
	v->n = 1;
	v->first = v->last = ps->epoch;
	v->hnext = ps->eb[st->id & (ps->enb - 1)];
	ps->eb[st->id & (ps->enb - 1)] = v;
	ps->en++;
}

/* The oldest eviction Close of st was answered or skipped. */
static void evict_done(struct ps_server *ps, const struct ps_stmt *st)
{
	struct ps_evict *v = evict_find(ps, st);
	if (!v || --v->n > 0)
		return; /* first stays: older than the oldest left, as it may be */
	struct ps_evict **pp = &ps->eb[st->id & (ps->enb - 1)];
	while (*pp != v)
		pp = &(*pp)->hnext;
	*pp = v->hnext;
	free(v);
	ps->en--;
}

/* st, not on the map, has an eviction Close unanswered in an earlier Sync
 * segment: the server may still have it, so preparing it again must close
 * it first (a Close of a statement that is not there is no error). */
static bool evicted_earlier(const struct ps_server *ps, const struct ps_stmt *st)
{
	const struct ps_evict *v = evict_find(ps, st);
	return v && v->first != ps->epoch;
}

static uint32_t q_len(const struct ps_server *ps)
{
	return ps->qtail - ps->qhead;
}

static struct ps_req *q_head(struct ps_server *ps)
{
	return ps->qhead == ps->qtail ? NULL : &ps->q[ps->qhead & (ps->qcap - 1)];
}

/* Room for n more requests; false when the queue is at its limit. */
static bool q_room(struct ps_server *ps, uint32_t n)
{
	uint32_t len = q_len(ps);
	if (len + n <= ps->qcap)
		return true;
	uint32_t cap = ps->qcap ? ps->qcap : 16;
	while (cap < len + n)
		cap *= 2;
	if (cap > PS_QUEUE_MAX)
		return false;
	struct ps_req *q = xmalloc(cap * sizeof(*q));
	for (uint32_t i = 0; i < len; i++)
		q[i] = ps->q[(ps->qhead + i) & (ps->qcap - 1)];
	free(ps->q);
	ps->q = q;
	ps->qcap = cap;
	ps->qhead = 0;
	ps->qtail = len;
	return true;
}

static struct ps_req *q_push(struct ps_server *ps, uint8_t kind, void *p)
{
	struct ps_req *r = &ps->q[ps->qtail++ & (ps->qcap - 1)];
	r->kind = kind;
	r->flags = 0;
	r->epoch = ps->epoch;
	r->p = p;
	return r;
}

/* Release what a request holds once it is done with (answered or skipped). */
static void req_release(struct ps_req *r)
{
	switch (r->kind) {
	case R_PARSE:
	case R_FAKE_PARSE:
	case R_FAKE_CLOSE:
	case R_DEALLOC_Q:
	case R_DEALLOC_P:
		if (r->p)
			cent_unref(r->p);
		break;
	case R_OWN_PARSE:
	case R_OWN_CLOSE:
		if (r->p)
			stmt_unref(r->p);
		break;
	case R_FAIL:
		free(r->p);
		break;
	default:
		break;
	}
}

/* The server skipped (or failed) the request: undo what it registered. */
static void req_undo(struct pgt_server *s, struct ps_req *r)
{
	struct ps_server *ps = s->ps;
	struct pgt_client *c = s->client;
	switch (r->kind) {
	case R_PARSE:
		if (r->p) {
			struct ps_cent *e = r->p;
			smap_undo_parse(ps, e->st, r);
			e->pending = false;
			e->failed = true;
			if (c && c->ps)
				cmap_remove(c->ps, e);
		}
		break;
	case R_FAKE_PARSE:
		((struct ps_cent *)r->p)->pending = false;
		((struct ps_cent *)r->p)->failed = true;
		if (c && c->ps)
			cmap_remove(c->ps, r->p);
		break;
	case R_FAKE_CLOSE:
	case R_DEALLOC_Q:
	case R_DEALLOC_P:
		/* PostgreSQL would not have closed it: the client keeps the name */
		if (r->p)
			((struct ps_cent *)r->p)->closing = false;
		break;
	case R_OWN_PARSE:
		if (r->p)
			smap_undo_parse(ps, r->p, r);
		break;
	case R_OWN_CLOSE:
		/* an eviction that did not happen: the statement is still there if
		 * it was before */
		if (r->p && !(r->flags & REQ_QUIET)) {
			struct ps_sent *e = smap_find(ps, r->p);
			uint8_t was = (r->flags & REQ_WAS_CONFIRMED) ? SENT_CONFIRMED : SENT_UNKNOWN;
			const struct ps_evict *v = evict_find(ps, r->p);
			if (!e && v && v->n > 1 && v->last != r->epoch) {
				/* evicted again in a later segment, so prepared again
				 * there behind a Close of its own: the server has it or
				 * not as the later requests say, and their undo says */
			} else if (!e) {
				smap_add(ps, r->p);
				smap_find(ps, r->p)->state = was;
			} else if (e->state == SENT_TENTATIVE && e->epoch == r->epoch) {
				/* prepared again behind its Close in this segment: that
				 * Parse is skipped too, and must not take the statement
				 * off the map when undone (the server still has it) */
				e->state = was;
			}
		}
		break;
	default:
		break;
	}
}

static __attribute__((noinline, cold)) void q_pop_flagged(struct ps_server *ps, struct ps_req *r)
{
	if (r->flags & REQ_FORGET)
		ps->forget_pending--;
	if (r->flags & REQ_EVICT)
		evict_done(ps, r->p);
	req_release(r);
}

static void q_pop(struct ps_server *ps)
{
	struct ps_req *r = &ps->q[ps->qhead++ & (ps->qcap - 1)];
	if (__builtin_expect(r->flags & (REQ_FORGET | REQ_EVICT), 0)) {
		q_pop_flagged(ps, r); /* out of line: most requests are neither */
		return;
	}
	req_release(r);
}

static void q_clear(struct pgt_server *s)
{
	struct ps_server *ps = s->ps;
	while (ps->qhead != ps->qtail)
		q_pop(ps);
}

void ps_server_forget_all(struct pgt_server *s)
{
	struct ps_server *ps = s->ps;
	if (!ps)
		return;
	while (!list_empty(&ps->lru))
		smap_del(ps, container_of(list_first(&ps->lru), struct ps_sent, lru));
	ps->uses = 0;
}

void ps_server_free(struct pgt_server *s)
{
	struct ps_server *ps = s->ps;
	if (!ps)
		return;
	if (ps->q)
		q_clear(s);
	ps_server_forget_all(s);
	free(ps->q);
	free(ps->b);
	free(ps->eb);
	free(ps);
	s->ps = NULL;
}

/* ---- sending ---- */

static bool inject_parse(struct pgt_client *c, const struct ps_stmt *st)
{
	uint8_t small[512];
	size_t n = 1 + 4 + st->namelen + 1 + st->len;
	uint8_t *m = n <= sizeof(small) ? small : xmalloc(n);
	m[0] = 'P';
	proto_put_be32(m + 1, (uint32_t)(n - 1));
	memcpy(m + 5, st->name, st->namelen + 1u);
	memcpy(m + 5 + st->namelen + 1, st->body, st->len);
	bool ok = sbuf_inject(&c->conn, m, n);
	if (m != small)
		free(m);
	return ok;
}

static bool inject_close(struct pgt_client *c, const struct ps_stmt *st)
{
	uint8_t m[1 + 4 + 1 + sizeof(st->name)];
	size_t n = 1 + 4 + 1 + st->namelen + 1u;
	m[0] = 'C';
	proto_put_be32(m + 1, (uint32_t)(n - 1));
	m[5] = 'S';
	memcpy(m + 6, st->name, st->namelen + 1u);
	return sbuf_inject(&c->conn, m, n);
}

/* Close the least recently used statement if `more` more would not fit:
 * two at most per message (the queue has room for that), so that a smaller
 * max_prepared_statements after a reload is reached over the next ones. */
static bool make_room_for(struct pgt_client *c, struct pgt_server *s, uint32_t more)
{
	struct ps_server *ps = s->ps;
	uint32_t max = (uint32_t)pgt.cfg->max_prepared_statements;
	for (int k = 0; k < 2 && ps->n > 0 && ps->n + more > max; k++) {
		struct ps_sent *old = container_of(list_first(&ps->lru), struct ps_sent, lru);
		if (!inject_close(c, old->st))
			return false;
		old->st->refs++;
		struct ps_req *r = q_push(ps, R_OWN_CLOSE, old->st);
		r->flags |= REQ_EVICT;
		if (old->state == SENT_CONFIRMED)
			r->flags |= REQ_WAS_CONFIRMED;
		evict_add(ps, old->st);
		smap_del(ps, old);
	}
	return true;
}

static bool make_room(struct pgt_client *c, struct pgt_server *s)
{
	return make_room_for(c, s, 1);
}

/* A Close of st in front of its Parse, for a statement the server may or
 * may not have: nothing to undo if skipped (the Parse's REQ_REPREP says). */
static bool close_first(struct pgt_client *c, struct pgt_server *s, struct ps_stmt *st)
{
	if (!inject_close(c, st))
		return false;
	st->refs++;
	q_push(s->ps, R_OWN_CLOSE, st)->flags |= REQ_QUIET;
	return true;
}

/* st is on s's map, but not to be relied on: close it (no error if it is
 * not there) and prepare it again in this segment. */
static bool reprepare(struct pgt_client *c, struct pgt_server *s, struct ps_sent *e)
{
	struct ps_server *ps = s->ps;
	if (!close_first(c, s, e->st) || !inject_parse(c, e->st))
		return false;
	e->state = SENT_TENTATIVE;
	e->epoch = ps->epoch;
	list_del(&e->lru);
	list_append(&ps->lru, &e->lru);
	c->pool->stats.server_parse_count++;
	return true;
}

/* A statement on s for the client's next message: prepared in front of it
 * if s lacks it, after closing the least recently used one if s is full. */
static bool ensure_on_server(struct pgt_client *c, struct pgt_server *s, struct ps_stmt *st)
{
	struct ps_server *ps = s->ps;
	struct ps_sent *e = smap_find(ps, st);
	if (e && usable(ps, e)) {
		list_del(&e->lru);
		list_append(&ps->lru, &e->lru);
		/* above a limit lowered by a reload: the others make way */
		return ps->n <= (uint32_t)pgt.cfg->max_prepared_statements || make_room_for(c, s, 0);
	}
	if (e) {
		if (!reprepare(c, s, e))
			return false;
		st->refs++;
		q_push(ps, R_OWN_PARSE, st)->flags |= REQ_REPREP;
		return true;
	}
	if (!make_room(c, s))
		return false;
	bool again = evicted_earlier(ps, st);
	if ((again && !close_first(c, s, st)) || !inject_parse(c, st))
		return false;
	smap_add(ps, st);
	st->refs++;
	struct ps_req *r = q_push(ps, R_OWN_PARSE, st);
	if (again)
		r->flags |= REQ_REPREP;
	c->pool->stats.server_parse_count++;
	return true;
}

/* Make the server fail here, so that it skips to the client's Sync as
 * PostgreSQL would after this error, and report `code`/`msg` instead of
 * the server's error: a Bind of a statement that cannot exist. */
static bool fail_here(struct pgt_client *c, struct pgt_server *s, const char *code, const char *fmt, ...)
    PGT_PRINTF(4, 5);
static bool fail_here(struct pgt_client *c, struct pgt_server *s, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t ml = strlen(msg);
	char *p = xmalloc(6 + ml + 1);
	memcpy(p, code, 5);
	p[5] = '\0';
	memcpy(p + 6, msg, ml + 1);
	static const uint8_t bind[] = {
	    'B', 0, 0, 0, 4 + 1 + 12 + 6, 0, '_', 'p', 'g', 't', 'e', 'n', 'a', 'n', 't', '_', '-', 0, 0, 0,
	    0,   0, 0, 0};
	_Static_assert(sizeof(bind) == 1 + 4 + 1 + 12 + 6, "failing Bind length");
	if (!sbuf_inject(&c->conn, bind, sizeof(bind))) {
		free(p);
		return false;
	}
	q_push(s->ps, R_FAIL, p);
	return true;
}

static void closing_done(struct pgt_server *s, struct ps_cent *e);

/* Made-up answers whose turn it is go to the client now. */
static bool emit_ready(struct pgt_server *s)
{
	struct ps_server *ps = s->ps;
	struct ps_req *r;
	while ((r = q_head(ps)) && (r->kind == R_FAKE_PARSE || r->kind == R_FAKE_CLOSE)) {
		static const uint8_t parse_complete[] = {'1', 0, 0, 0, 4};
		static const uint8_t close_complete[] = {'3', 0, 0, 0, 4};
		const uint8_t *m = r->kind == R_FAKE_PARSE ? parse_complete : close_complete;
		if (r->kind == R_FAKE_PARSE)
			((struct ps_cent *)r->p)->pending = false;
		else
			closing_done(s, r->p);
		q_pop(ps);
		if (s->client && !sbuf_inject(&s->conn, m, 5))
			return false;
	}
	return true;
}

/* ---- the client's messages ---- */

/* A made-up answer in the client's place in the stream: at once if nothing
 * is outstanding before it, else when its turn comes. */
static enum sbuf_verdict answer_here(struct pgt_client *c, struct pgt_server *s, uint8_t kind, void *p)
{
	bool first = q_len(s->ps) == 0;
	q_push(s->ps, kind, p);
	if (first && !emit_ready(s))
		return c->conn.dead ? SB_GONE : SB_SKIP;
	return SB_SKIP;
}

/* A name whose Parse went out in an earlier Sync segment and is not
 * answered yet: whether it exists depends on that answer (an error there
 * skips it), so the client waits for it.  Only a client that pipelines a
 * statement's use behind a Sync after its Parse ever waits here. */
static bool unsettled(const struct ps_server *ps, const struct ps_cent *e)
{
	return e && e->pending && e->epoch != ps->epoch;
}

/* The client's name as the server will see it at this point of the
 * stream: NULL if it does not exist; *wait when that depends on answers to
 * an earlier Sync segment. */
static struct ps_cent *lookup(const struct ps_server *ps, const struct pgt_client *c, const char *name,
                              bool *wait)
{
	/* a name may be gone once an earlier Query is answered (a Query ends
	 * with ReadyForQuery, flushed: waiting for it cannot stall) */
	*wait = ps->forget_pending > 0;
	const struct ps_client *m = c->ps;
	if (!m || !m->nb || *wait)
		return NULL;
	size_t len;
	uint32_t h = hash_name(name, &len);
	struct ps_cent *found = NULL;
	for (struct ps_cent *e = m->b[h & (m->nb - 1)]; e; e = e->hnext) {
		if (e->hash != h || e->namelen != len || memcmp(e->name, name, len) != 0)
			continue;
		if (e->closing) {
			if (e->close_epoch != ps->epoch)
				*wait = true;
			continue;
		}
		found = e;
	}
	if (unsettled(ps, found))
		*wait = true;
	return *wait ? NULL : found;
}

/* A Close or DEALLOCATE of e was answered: the name is gone. */
static void closing_done(struct pgt_server *s, struct ps_cent *e)
{
	if (e && e->closing && s->client && s->client->ps)
		cmap_remove(s->client->ps, e);
	if (e)
		e->closing = false;
}

static enum sbuf_verdict wait_for_answers(struct ps_server *ps)
{
	ps->held = true;
	return SB_HOLD;
}

static bool starts_with_prefix(const char *name)
{
	return strncmp(name, PS_SERVER_PREFIX, sizeof(PS_SERVER_PREFIX) - 1) == 0;
}

/* The statement name of a text that is only "DEALLOCATE [PREPARE] name"
 * (drivers evict their statement caches so: psycopg sends it through the
 * extended protocol), into out; false for anything else, ALL included. */
static bool deallocate_name(const char *q, char *out, size_t outlen)
{
	const char *p = q;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (strncasecmp(p, "deallocate", 10) != 0 || (p[10] != ' ' && p[10] != '\t' && p[10] != '\n'))
		return false;
	p += 10;
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	if (strncasecmp(p, "prepare", 7) == 0 && (p[7] == ' ' || p[7] == '\t' || p[7] == '\n')) {
		p += 7;
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
	}
	size_t n = 0;
	if (*p == '"') {
		for (p++; *p; p++) {
			if (*p == '"') {
				if (p[1] != '"')
					break;
				p++;
			}
			if (n + 1 >= outlen)
				return false;
			out[n++] = *p;
		}
		if (*p++ != '"')
			return false;
	} else {
		for (; vars_ident_char((unsigned char)*p); p++) {
			if (n + 1 >= outlen)
				return false;
			out[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p | 0x20 : *p);
		}
	}
	out[n] = '\0';
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ';')
		p++;
	return n > 0 && *p == '\0' && strcasecmp(out, "all") != 0;
}

/* DEALLOCATE of one of the client's names: the client forgets it, and the
 * server runs a DEALLOCATE that succeeds (of an empty statement prepared
 * in front of it), so that the answer is PostgreSQL's. */
static enum sbuf_verdict client_deallocate(struct pgt_client *c, struct pgt_server *s, struct ps_cent *e,
                                           bool query)
{
	static uint64_t seq;
	char name[40], sql[64];
	snprintf(name, sizeof(name), "%sd%llu", PS_SERVER_PREFIX, (unsigned long long)++seq);
	snprintf(sql, sizeof(sql), "DEALLOCATE %s", name);
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_start(&b, 'P');
	pktbuf_put_str(&b, name);
	pktbuf_put_str(&b, "");
	pktbuf_put_u16(&b, 0);
	pktbuf_finish(&b);
	pktbuf_start(&b, query ? 'Q' : 'P');
	if (!query)
		pktbuf_put_str(&b, "");
	pktbuf_put_str(&b, sql);
	if (!query)
		pktbuf_put_u16(&b, 0);
	pktbuf_finish(&b);
	bool ok = sbuf_inject(&c->conn, b.data, b.len);
	pktbuf_free(&b);
	if (!ok)
		return SB_GONE;
	q_push(s->ps, R_OWN_PARSE, NULL);
	e->refs++; /* the request's */
	q_push(s->ps, query ? R_DEALLOC_Q : R_DEALLOC_P, e);
	e->closing = true; /* gone once answered; skipped, it stays */
	e->close_epoch = s->ps->epoch;
	if (!query)
		c->pool->stats.server_parse_count++;
	return SB_SKIP;
}

/* Query text that starts with DEALLOCATE or DISCARD (ALL or not: a wait
 * too many costs only a round trip). */
static bool may_forget_all(const char *q, size_t n)
{
	while (n > 0 && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r' || *q == '(')) {
		q++;
		n--;
	}
	return (n >= 10 && strncasecmp(q, "deallocate", 10) == 0) ||
	       (n >= 7 && strncasecmp(q, "discard", 7) == 0);
}

static enum sbuf_verdict client_query(struct pgt_client *c, struct pgt_server *s, struct pgt_pkt *pkt)
{
	char name[128];
	if (c->ps && c->ps->n && pkt->total < 300) {
		if (!pkt->full)
			return SB_NEED_FULL;
		if (pkt->data[pkt->total - 1] == '\0' &&
		    deallocate_name((const char *)pkt->data + 5, name, sizeof(name))) {
			bool wait;
			struct ps_cent *e = lookup(s->ps, c, name, &wait);
			if (wait)
				return wait_for_answers(s->ps);
			if (e)
				return client_deallocate(c, s, e, true);
		}
		if (may_forget_all((const char *)pkt->data + 5, pkt->total - 5)) {
			/* the client's names may be gone once it is answered: what
			 * uses them next waits for that (lookup) */
			q_push(s->ps, R_QUERY, NULL)->flags |= REQ_FORGET;
			s->ps->forget_pending++;
			return SB_FORWARD;
		}
	}
	q_push(s->ps, R_QUERY, NULL);
	return SB_FORWARD;
}

static enum sbuf_verdict client_parse(struct pgt_client *c, struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct ps_server *ps = s->ps;
	if (!pkt->full && pkt->avail > 5 && pkt->data[5] == '\0') {
		/* the unnamed statement, larger than the buffer: it streams through */
		c->pool->stats.client_parse_count++;
		c->pool->stats.server_parse_count++;
		q_push(ps, R_PARSE, NULL);
		return SB_FORWARD;
	}
	if (!pkt->full) {
		pkt->grow = true; /* a named statement is kept: it must be read whole */
		return SB_NEED_FULL;
	}
	struct proto_reader r;
	proto_reader_init(&r, pkt->data + 5, pkt->total - 5);
	const char *name = proto_get_str(&r);
	c->pool->stats.client_parse_count++;
	if (!name || !*name) {
		char dname[128];
		const char *q = name ? proto_get_str(&r) : NULL;
		if (q && c->ps && c->ps->n && deallocate_name(q, dname, sizeof(dname))) {
			bool wait;
			struct ps_cent *e = lookup(ps, c, dname, &wait);
			if (wait)
				return wait_for_answers(ps);
			if (e)
				return client_deallocate(c, s, e, false);
		}
		c->pool->stats.server_parse_count++;
		q_push(ps, R_PARSE, NULL);
		return SB_FORWARD;
	}
	const uint8_t *body = r.p + r.pos;
	uint32_t blen = (uint32_t)(r.len - r.pos);
	/* a malformed body goes as it is: the server reports it, nothing is kept */
	const char *query = proto_get_str(&r);
	uint16_t ntypes = proto_get_u16(&r);
	proto_get_bytes(&r, (size_t)ntypes * 4);
	if (!query || r.bad || r.pos != r.len) {
		c->pool->stats.server_parse_count++;
		q_push(ps, R_PARSE, NULL);
		return SB_FORWARD;
	}
	size_t nl;
	uint32_t h = hash_name(name, &nl);
	bool wait;
	struct ps_cent *dup = lookup(ps, c, name, &wait);
	if (wait)
		return wait_for_answers(ps);
	if (dup) {
		/* PostgreSQL reports a syntax or analysis error of the text before
		 * the name's: parse the text as the unnamed statement first */
		uint8_t small[512];
		size_t n = 1 + 4 + 1 + blen;
		uint8_t *m = n <= sizeof(small) ? small : xmalloc(n);
		m[0] = 'P';
		proto_put_be32(m + 1, (uint32_t)(n - 1));
		m[5] = 0;
		memcpy(m + 6, body, blen);
		bool ok = sbuf_inject(&c->conn, m, n);
		if (m != small)
			free(m);
		if (!ok)
			return SB_GONE;
		q_push(ps, R_OWN_PARSE, NULL);
		c->pool->stats.server_parse_count++;
		return fail_here(c, s, "42P05", "prepared statement \"%s\" already exists", name) ? SB_SKIP
		                                                                                  : SB_GONE;
	}
	int max = pgt.cfg->max_prepared_statements;
	uint32_t limit = max < 100 ? 10000 : (uint32_t)max * 100;
	if (c->ps && c->ps->n >= limit)
		return fail_here(c, s, "53400",
		                 "too many prepared statements: pgtenant keeps at most %u per client "
		                 "connection; deallocate some",
		                 limit)
		           ? SB_SKIP
		           : SB_GONE;
	if (!c->ps)
		c->ps = xcalloc(1, sizeof(*c->ps));
	struct ps_cent *e = xmalloc(sizeof(*e) + nl + 1);
	memcpy(e->name, name, nl + 1);
	e->namelen = (uint32_t)nl;
	e->hash = h;
	e->refs = 0;
	e->st = stmt_get(body, blen);
	e->pending = true;
	e->failed = false;
	e->closing = false;
	e->epoch = ps->epoch;
	cmap_insert(c->ps, e);
	e->refs++; /* the request's */
	struct ps_sent *se = smap_find(ps, e->st);
	if (se && !usable(ps, se)) {
		/* the client's Parse, of a statement the server may or may not have */
		if (!reprepare(c, s, se))
			return SB_GONE;
		q_push(ps, R_PARSE, e)->flags |= REQ_REPREP;
		return SB_SKIP;
	}
	if (se) {
		list_del(&se->lru);
		list_append(&ps->lru, &se->lru);
		return answer_here(c, s, R_FAKE_PARSE, e);
	}
	/* prepare it under its server-side name (the request is the client's:
	 * its ParseComplete goes to the client) */
	if (!make_room(c, s))
		return SB_GONE;
	bool again = evicted_earlier(ps, e->st);
	if ((again && !close_first(c, s, e->st)) || !inject_parse(c, e->st))
		return SB_GONE;
	smap_add(ps, e->st);
	c->pool->stats.server_parse_count++;
	struct ps_req *pr = q_push(ps, R_PARSE, e);
	if (again)
		pr->flags |= REQ_REPREP;
	return SB_SKIP;
}

/* Bind and Describe/Close 'S' name the statement; find the client's name
 * in the message: `off` is where it starts. */
static enum sbuf_verdict client_bind(struct pgt_client *c, struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct ps_server *ps = s->ps;
	c->pool->stats.bind_count++;
	uint32_t avail = PGT_MIN(pkt->avail, pkt->total);
	const uint8_t *p = pkt->data + 5, *end = pkt->data + avail;
	const uint8_t *z1 = memchr(p, 0, (size_t)(end - p));
	const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, (size_t)(end - z1 - 1)) : NULL;
	if (!z2) {
		if (!pkt->full && avail < 5 + 4096) {
			pkt->want = PGT_MIN(pkt->total, 5 + 4096);
			return SB_NEED_FULL;
		}
		q_push(ps, R_BIND, NULL); /* malformed or absurd names: the server says so */
		return SB_FORWARD;
	}
	const char *stmt = (const char *)z1 + 1;
	if (!*stmt) {
		q_push(ps, R_BIND, NULL);
		return SB_FORWARD;
	}
	bool wait;
	struct ps_cent *e = lookup(ps, c, stmt, &wait);
	if (wait)
		return wait_for_answers(ps);
	if (!e) {
		if (starts_with_prefix(stmt))
			return fail_here(c, s, "26000", "prepared statement \"%s\" does not exist", stmt)
			           ? SB_SKIP
			           : SB_GONE;
		q_push(ps, R_BIND, NULL); /* perhaps one the client made with SQL PREPARE */
		return SB_FORWARD;
	}
	if (!ensure_on_server(c, s, e->st))
		return SB_GONE;
	/* a new head (type, length, portal, server-side name); the rest of the
	 * message is forwarded from the buffer as it is */
	uint32_t portal_len = (uint32_t)(z1 - p) + 1, stmt_len = (uint32_t)(z2 - z1);
	uint8_t head[5 + 4096 + sizeof(e->st->name)];
	if (portal_len > 4096)
		return client_fail(c, "08P01", "protocol violation: portal name too long"), SB_GONE;
	uint32_t hl = 5 + portal_len + e->st->namelen + 1;
	head[0] = 'B';
	proto_put_be32(head + 1, pkt->total - 1 - stmt_len + e->st->namelen + 1);
	memcpy(head + 5, p, portal_len);
	memcpy(head + 5 + portal_len, e->st->name, e->st->namelen + 1u);
	if (!sbuf_inject(&c->conn, head, hl))
		return SB_GONE;
	pkt->skip_head = 5 + portal_len + stmt_len;
	q_push(ps, R_BIND, e->st);
	ps->uses++;
	s->hint |= e->st->hint;
	return SB_FORWARD;
}

static enum sbuf_verdict client_describe_close(struct pgt_client *c, struct pgt_server *s,
                                               struct pgt_pkt *pkt)
{
	struct ps_server *ps = s->ps;
	uint8_t kind = pkt->type == 'D' ? R_DESCRIBE : R_CLOSE;
	if (!pkt->full)
		return SB_NEED_FULL;
	struct proto_reader r;
	proto_reader_init(&r, pkt->data + 5, pkt->total - 5);
	uint8_t what = proto_get_u8(&r);
	const char *name = proto_get_str(&r);
	if (r.bad || what != 'S' || !*name) {
		q_push(ps, kind, NULL);
		return SB_FORWARD;
	}
	bool wait;
	struct ps_cent *e = lookup(ps, c, name, &wait);
	if (wait)
		return wait_for_answers(ps);
	if (!e) {
		if (starts_with_prefix(name)) {
			if (kind == R_CLOSE) /* closing a name that does not exist is no error */
				return answer_here(c, s, R_FAKE_CLOSE, NULL);
			return fail_here(c, s, "26000", "prepared statement \"%s\" does not exist", name)
			           ? SB_SKIP
			           : SB_GONE;
		}
		q_push(ps, kind, NULL); /* perhaps one the client made with SQL PREPARE */
		return SB_FORWARD;
	}
	if (kind == R_CLOSE) {
		/* the client forgets its name; the server keeps the statement for
		 * others (or until evicted).  Undone if the server skips it. */
		e->refs++;
		e->closing = true; /* gone once answered; skipped, it stays */
		e->close_epoch = ps->epoch;
		return answer_here(c, s, R_FAKE_CLOSE, e);
	}
	if (!ensure_on_server(c, s, e->st))
		return SB_GONE;
	uint8_t m[1 + 4 + 1 + sizeof(e->st->name)];
	size_t n = 1 + 4 + 1 + e->st->namelen + 1u;
	m[0] = 'D';
	proto_put_be32(m + 1, (uint32_t)(n - 1));
	m[5] = 'S';
	memcpy(m + 6, e->st->name, e->st->namelen + 1u);
	if (!sbuf_inject(&c->conn, m, n))
		return SB_GONE;
	q_push(ps, R_DESCRIBE, e->st);
	return SB_SKIP;
}

enum sbuf_verdict ps_client_message(struct pgt_client *c, struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct ps_server *ps = ps_server_get(s);
	if (s->ps_untracked) {
		/* they come first in the answers: queue them, now that the order
		 * matters (the queue is empty: there is room) */
		q_room(ps, s->ps_untracked + 6);
		for (; s->ps_untracked; s->ps_untracked--)
			q_push(ps, R_QUERY, NULL);
	}
	if (ps->skipping) {
		/* sent before the client saw the error: the server ignores it, and
		 * nothing of it is kept; a Query or FunctionCall gets no answer */
		if (pkt->type == 'S') {
			ps->skipping = false;
		} else {
			if (pkt->type == 'P')
				c->pool->stats.client_parse_count++;
			return pkt->type == 'Q' || pkt->type == 'F' ? SB_SKIP : SB_FORWARD;
		}
	}
	/* at most: two Closes to make room, one before a Parse again, a Parse,
	 * and the message's own */
	if (!q_room(ps, 6)) {
		ps->held = true;
		return SB_HOLD;
	}
	switch (pkt->type) {
	case 'P':
		return client_parse(c, s, pkt);
	case 'B':
		return client_bind(c, s, pkt);
	case 'D':
	case 'C':
		return client_describe_close(c, s, pkt);
	case 'E':
		q_push(ps, R_EXECUTE, NULL);
		return SB_FORWARD;
	case 'S':
		q_push(ps, R_SYNC, NULL);
		ps->epoch++;
		return SB_FORWARD;
	case 'Q':
		return client_query(c, s, pkt);
	case 'F':
		q_push(ps, R_FUNCTION, NULL);
		return SB_FORWARD;
	default:
		return SB_FORWARD;
	}
}

/* ---- the server's answers ---- */

static bool is_extended(uint8_t kind)
{
	return kind != R_SYNC && kind != R_QUERY && kind != R_FUNCTION && kind != R_DEALLOC_Q;
}

/* Taken off the queue: a made-up answer next waits for this message. */
static void popped(struct pgt_server *s)
{
	struct ps_server *ps = s->ps;
	struct ps_req *r = q_head(ps);
	if (r && (r->kind == R_FAKE_PARSE || r->kind == R_FAKE_CLOSE)) {
		ps->emit_after = true;
		sbuf_set_barrier(&s->conn);
	}
	if (ps->held && s->client) {
		/* it waits for room in the queue or for an answer: look again once
		 * this answer is sent (what it makes up goes after it) */
		ps->held = false;
		ps->resume_after = true;
		sbuf_set_barrier(&s->conn);
	}
}

static int answer_error(struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct ps_server *ps = s->ps;
	struct ps_req *r = q_head(ps);
	if (!r || !is_extended(r->kind))
		return PS_PASS; /* in a simple Query, or at commit: no skipping */
	if (!pkt->full)
		return SB_NEED_FULL;
	const char *code = proto_error_field(pkt->data + 5, pkt->total - 5, 'C');
	int v = SB_FORWARD;
	if (r->kind == R_FAIL) {
		/* the error pgtenant provoked: the client gets the one it stands for */
		const char *p = r->p;
		struct pktbuf b;
		pktbuf_init(&b);
		pktbuf_error(&b, "ERROR", p, p + 6);
		bool ok = !s->client || sbuf_inject(&s->conn, b.data, b.len);
		pktbuf_free(&b);
		if (!ok)
			return SB_GONE;
		v = SB_SKIP;
	} else if (code && (strcmp(code, "26000") == 0 || strcmp(code, "42P05") == 0) &&
	           (r->kind == R_OWN_PARSE || r->kind == R_PARSE || (r->kind == R_BIND && r->p) ||
	            (r->kind == R_DESCRIBE && r->p))) {
		/* the server's statements are not what pgtenant thinks (a client's
		 * SQL DEALLOCATE of pgtenant's name?): not to be reused */
		s->close_needed = true;
		server_log(s, PGT_LOG_WARNING,
		           "server-side prepared statements out of step; closing once released");
	}
	/* the failed request, and everything up to the Sync, did not happen */
	req_undo(s, r);
	q_pop(ps);
	ps->skipping = true;
	while ((r = q_head(ps))) {
		if (r->kind == R_SYNC) {
			ps->skipping = false;
			break;
		}
		if (r->kind == R_QUERY || r->kind == R_FUNCTION || r->kind == R_DEALLOC_Q) {
			/* skipped too: no ReadyForQuery will answer it */
			if (s->expect_rfq > 0)
				s->expect_rfq--;
		}
		req_undo(s, r);
		q_pop(ps);
	}
	if (ps->skipping) {
		/* the server waits for the client's Sync, even when a Query the
		 * client sent after the error was the last thing it sent: the
		 * connection is not between transactions (never released, and a
		 * client that goes away gets a Sync sent for it) */
		s->sent_since_rfq = true;
	}
	popped(s);
	return v;
}

int ps_server_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct ps_server *ps = s->ps;
	struct ps_req *r = q_head(ps);
	if (!r)
		return PS_PASS;
	if (r->kind == R_FAKE_PARSE || r->kind == R_FAKE_CLOSE) {
		if (pkt->type == 'N' || pkt->type == 'S' || pkt->type == 'A')
			return PS_PASS;
		if (!emit_ready(s))
			return SB_GONE;
		if (!(r = q_head(ps)))
			return PS_PASS;
	}
	switch (pkt->type) {
	case '1':
		if (r->kind == R_OWN_PARSE) {
			smap_confirm(ps, r->p);
			q_pop(ps);
			popped(s);
			return SB_SKIP;
		}
		if (r->kind != R_PARSE && r->kind != R_DEALLOC_P)
			break;
		if (r->kind == R_PARSE && r->p) {
			smap_confirm(ps, ((struct ps_cent *)r->p)->st);
			((struct ps_cent *)r->p)->pending = false;
		}
		if (r->kind == R_DEALLOC_P)
			closing_done(s, r->p);
		q_pop(ps);
		popped(s);
		return PS_PASS;
	case '3':
		if (r->kind == R_OWN_CLOSE) {
			q_pop(ps);
			popped(s);
			return SB_SKIP;
		}
		if (r->kind != R_CLOSE)
			break;
		q_pop(ps);
		popped(s);
		return PS_PASS;
	case '2':
		if (r->kind != R_BIND)
			break;
		q_pop(ps);
		popped(s);
		return PS_PASS;
	case 'T':
	case 'n':
		if (r->kind == R_DESCRIBE) {
			q_pop(ps);
			popped(s);
		}
		return PS_PASS;
	case 'C':
	case 'I':
	case 's':
		if (r->kind == R_EXECUTE) {
			q_pop(ps);
			popped(s);
		}
		return PS_PASS;
	case 'E':
		return answer_error(s, pkt);
	case 'Z':
		if (r->kind != R_SYNC && r->kind != R_QUERY && r->kind != R_FUNCTION &&
		    r->kind != R_DEALLOC_Q)
			break;
		if (r->kind == R_DEALLOC_Q)
			closing_done(s, r->p);
		q_pop(ps);
		popped(s);
		return PS_PASS;
	default:
		return PS_PASS;
	}
	server_fail(s, "answer '%c' does not match the request it should answer (%d)", pkt->type, r->kind);
	return SB_GONE;
}

bool ps_server_sync(struct pgt_server *s)
{
	struct ps_server *ps = s->ps;
	if (!ps)
		return true;
	if (!q_room(ps, s->ps_untracked + 1))
		return false;
	for (; s->ps_untracked; s->ps_untracked--)
		q_push(ps, R_QUERY, NULL); /* answered before the Sync */
	ps->skipping = false;
	q_push(ps, R_SYNC, NULL);
	ps->epoch++;
	return true;
}

void ps_server_tag(struct pgt_server *s, const char *tag, size_t len)
{
	/* everything on the server went with these, and the client asked to
	 * forget its own statements */
	if (!((len == 11 && memcmp(tag, "DISCARD ALL", 11) == 0) ||
	      (len == 14 && memcmp(tag, "DEALLOCATE ALL", 14) == 0)))
		return;
	/* what was prepared before it, not what the client pipelined after it
	 * (those Parses are still unanswered) */
	struct ps_server *ps = s->ps;
	if (ps) {
		struct list *i, *next;
		for (i = ps->lru.next; i != &ps->lru; i = next) {
			next = i->next;
			struct ps_sent *e = container_of(i, struct ps_sent, lru);
			if (e->state != SENT_TENTATIVE)
				smap_del(ps, e);
		}
	}
	struct ps_client *m = s->client ? s->client->ps : NULL;
	for (uint32_t b = 0; m && b < m->nb; b++) {
		for (struct ps_cent *e = m->b[b], *next; e; e = next) {
			next = e->hnext;
			if (!e->pending)
				cmap_remove(m, e);
		}
	}
}

void ps_server_barrier_run(struct pgt_server *s)
{
	struct ps_server *ps = s->ps;
	if (!ps)
		return;
	if (ps->emit_after) {
		ps->emit_after = false;
		if (!emit_ready(s))
			return;
	}
	if (ps->resume_after) {
		ps->resume_after = false;
		if (s->client)
			sbuf_resume(&s->client->conn);
	}
}
