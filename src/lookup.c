/*
 * pgtenant's own one-row queries on internal pools (see lookup.h).  One
 * queue for all of them: a ready server connection takes the first lookup
 * of its own pool.  A pool that cannot log in fails the lookups queued for
 * it instead of letting them wait for client_login_timeout.
 */
#include "lookup.h"

#include <stdlib.h>

#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "server.h"

static struct list queue = {&queue, &queue};

void lookup_kick(struct pgt_lookup *l)
{
	struct list *f = list_last(&l->pool->idle_servers);
	if (f && !list_empty(&l->node))
		pool_server_ready(l->pool, container_of(f, struct pgt_server, node));
	else
		pool_maybe_launch(l->pool);
}

void lookup_queue(struct pgt_lookup *l)
{
	list_append(&queue, &l->node);
	l->pool->internal_want++;
}

static void dequeue(struct pgt_lookup *l)
{
	if (!list_empty(&l->node)) {
		list_del(&l->node);
		list_init(&l->node);
		l->pool->internal_want--;
	}
}

void lookup_cancel(struct pgt_lookup *l)
{
	dequeue(l);
}

bool lookup_server_ready(struct pgt_server *s)
{
	struct list *i;
	list_for_each (i, &queue) {
		struct pgt_lookup *l = container_of(i, struct pgt_lookup, node);
		if (l->pool != s->pool)
			continue;
		dequeue(l);
		struct pktbuf b;
		pktbuf_init(&b);
		pktbuf_ext_query(&b, l->ops->sql(l), l->ops->param(l));
		bool ok = sbuf_send_raw(&s->conn, b.data, b.len);
		pktbuf_free(&b);
		s->lookup = l;
		if (!ok)
			server_fail(s, "send failed"); /* fails the lookup too */
		return true;
	}
	return false;
}

enum sbuf_verdict lookup_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct pgt_lookup *l = s->lookup;
	if (!pkt->full)
		return SB_NEED_FULL;
	const uint8_t *body = pkt->data + 5;
	uint32_t len = pkt->total - 5;
	switch (pkt->type) {
	case 'D':
		l->ops->row(l, body, len);
		return SB_SKIP;
	case 'E': {
		const char *m = proto_error_field(body, len, 'M');
		if (!l->error)
			l->error = xstrdup(m ? m : "error");
		return SB_SKIP;
	}
	case 'Z':
		s->txn = (char)body[0];
		s->lookup = NULL;
		l->ops->done(l);
		if (s->conn.dead)
			return SB_GONE;
		pool_server_ready(s->pool, s);
		return s->conn.dead ? SB_GONE : SB_SKIP;
	default:
		return SB_SKIP;
	}
}

void lookup_server_lost(struct pgt_server *s, const char *reason)
{
	struct pgt_lookup *l = s->lookup;
	if (l) {
		s->lookup = NULL;
		if (!l->error)
			l->error = xstrdup(reason);
		l->ops->done(l);
	}
	if (s->state == SV_LOGIN && s->pool->nservers == 0) {
		struct list *i, *tmp;
		list_for_each_safe (i, tmp, &queue) {
			struct pgt_lookup *q = container_of(i, struct pgt_lookup, node);
			if (q->pool != s->pool)
				continue;
			dequeue(q);
			q->error = xstrdup(reason);
			q->ops->done(q);
		}
	}
}
