/*
 * fuzz_txn: prepare.c's tracking of protocol-level prepared statements in
 * transaction mode, driven the way client.c and server.c drive it.  A
 * client and a server connection are linked as the pooler links them, and
 * the input is a sequence of steps: a client message (ps_client_packet,
 * then active_packet's bookkeeping), a server message (server_on_packet's
 * fast path, ps_server_packet, ReadyForQuery and CommandComplete handling
 * with ps_server_tag), a barrier firing late (as sbuf does when the socket
 * was full, with client messages processed meanwhile), or the client
 * vanishing mid-transaction (the drain, with no client to answer).  At the
 * end of each transaction the server is released (ps_server_take_uses) and
 * the next client message links it again, to the same client or another
 * one, with the reset either keeping the statements or forgetting them
 * (ps_server_forget), as server_begin() chooses.
 *
 * Whatever pgtenant writes towards either side (forwarded, rewritten or
 * injected with sbuf_inject through real non-blocking socketpairs) is read
 * back and must be a well-formed message stream that ends on a message
 * boundary: a Bind rewritten with a wrong length, or an injection in the
 * middle of a message, breaks it.  What goes to the server also feeds a
 * model of the statements an honest PostgreSQL would have (below), which
 * catches pgtenant preparing one the server still has.  A verdict the
 * pooler cannot act on (SB_NEED_FULL for a whole message), a client held
 * with nothing that can release it, or a request queue out of bounds
 * abort; freeing everything at the end of every input lets LeakSanitizer
 * (and ps_mem_stats, in any build) check the reference counting.
 *
 * What cannot run without an event loop is intercepted at link time
 * (-Wl,--wrap, see meson.build), so src/ is untouched: server_fail and
 * client_fail mark the connection dead (the session ends), server_log is
 * silent, and sbuf_resume only records that the held client may go on (the
 * harness then gives it its message again, as sbuf's pump would).
 *
 * Input: one byte of settings (max_prepared_statements 1-4, or 100), then
 * steps.  A step is a selector byte, and for a message step the message as
 * on the wire (type, int32 length, body):
 *   sel & 3 == 0  client message; when the server is unlinked, it is linked
 *                 first: sel & 4 = the reset forgets the statements,
 *                 sel & 8 = the other client
 *   sel & 3 == 1  server message
 *   sel & 3 == 2  a pending barrier fires
 *   sel & 3 == 3  the linked client vanishes (mid-transaction: the drain;
 *                 a Terminate from the client is the same)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "fuzz_util.h"
#include "loop.h"
#include "pool.h"
#include "prepare.h"
#include "proto.h"
#include "sbuf.h"
#include "server.h"
#include "session.h"

/* The largest message a step may carry: far below what the socket buffers
 * take, so that nothing pgtenant writes in one step ever waits in an outq
 * (which would need the event loop). */
#define STEP_MAX (16u << 10)

/* ---- link-time replacements (-Wl,--wrap=...) ---- */

void __wrap_server_fail(struct pgt_server *s, const char *fmt, ...);
void __wrap_server_log(const struct pgt_server *s, int level, const char *fmt, ...);
void __wrap_client_fail(struct pgt_client *c, const char *sqlstate, const char *fmt, ...);
bool __wrap_sbuf_resume(struct pgt_conn *c);

void __wrap_server_fail(struct pgt_server *s, const char *fmt, ...)
{
	(void)fmt;
	s->conn.dead = true;
}

void __wrap_server_log(const struct pgt_server *s, int level, const char *fmt, ...)
{
	(void)s;
	(void)level;
	(void)fmt;
}

void __wrap_client_fail(struct pgt_client *c, const char *sqlstate, const char *fmt, ...)
{
	(void)sqlstate;
	(void)fmt;
	c->conn.dead = true;
}

bool __wrap_sbuf_resume(struct pgt_conn *c)
{
	if (c->dead)
		return false;
	c->hold = false;
	return true;
}

/* ---- the connections ---- */

static struct pgt_conn *client_peer(struct pgt_conn *c)
{
	struct pgt_server *s = ((struct pgt_client *)c)->server;
	return s ? &s->conn : NULL;
}

static struct pgt_conn *server_peer(struct pgt_conn *c)
{
	struct pgt_client *k = ((struct pgt_server *)c)->client;
	return k ? &k->conn : NULL;
}

static void conn_closed(struct pgt_conn *c, const char *reason, bool protocol_error)
{
	(void)reason;
	(void)protocol_error;
	c->dead = true;
}

static const struct conn_ops client_ops = {.on_close = conn_closed, .peer = client_peer};
static const struct conn_ops server_ops = {.on_close = conn_closed, .peer = server_peer};

/* [0]: pgtenant's end, [1]: the harness reads what pgtenant sent there */
static int sp_client[2], sp_server[2];

/* What one side received, reassembled into messages. */
struct stream {
	uint8_t *buf;
	size_t len, cap;
};
static struct stream to_client, to_server;

static void model_request(const uint8_t *m, uint32_t total);

static void stream_read(int fd, struct stream *st)
{
	for (;;) {
		if (st->cap - st->len < 65536) {
			st->cap = st->cap ? st->cap * 2 : 131072;
			st->buf = realloc(st->buf, st->cap);
			if (!st->buf)
				abort();
		}
		ssize_t n = read(fd, st->buf + st->len, st->cap - st->len);
		if (n > 0) {
			st->len += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	size_t off = 0;
	for (;;) {
		struct proto_hdr hdr;
		enum proto_result r = proto_parse_header(st->buf + off, st->len - off, 1u << 30, &hdr);
		if (r == PROTO_NEED_MORE)
			break;
		if (r != PROTO_OK)
			abort(); /* pgtenant wrote something that is no message */
		if (hdr.total > st->len - off)
			break;
		if (st == &to_server)
			model_request(st->buf + off, hdr.total);
		off += hdr.total;
	}
	memmove(st->buf, st->buf + off, st->len - off);
	st->len -= off;
}

/* ---- what an honest server has ----
 *
 * The statements a real PostgreSQL would have, replayed from what pgtenant
 * sent it and from the answers of the input: a ParseComplete adds the name,
 * a CloseComplete removes it, an error in the extended protocol skips
 * everything up to the Sync, and DISCARD/DEALLOCATE tags (SQL that may
 * remove anything) or the reset's DISCARD ALL empty the set, which can
 * only make it smaller than the server's.  PostgreSQL fails a Parse of a
 * name it has; so a ParseComplete of one of pgtenant's names that the set
 * already holds means pgtenant prepared a statement the server still had.
 * Answers a real server would not give in that order make the model give
 * up for the rest of the input (prepare.c's own checks still run). */

struct mreq {
	uint8_t type, kind; /* kind: 'S'/'P' of a Describe or Close */
	char *name;         /* P and C 'S' only */
};

static struct {
	struct mreq *q;
	size_t n, cap, head;
	char **have;
	size_t nhave, caphave;
	bool off;
} model;

static void model_clear_have(void)
{
	for (size_t i = 0; i < model.nhave; i++)
		free(model.have[i]);
	model.nhave = 0;
}

static void model_reset(void)
{
	for (size_t i = model.head; i < model.n; i++)
		free(model.q[i].name);
	model.n = model.head = 0;
	model_clear_have();
	model.off = false;
}

static size_t model_find(const char *name)
{
	for (size_t i = 0; i < model.nhave; i++)
		if (strcmp(model.have[i], name) == 0)
			return i;
	return SIZE_MAX;
}

static void model_request(const uint8_t *m, uint32_t total)
{
	struct mreq r = {.type = m[0]};
	const uint8_t *b = m + 5, *end = m + total;
	const uint8_t *z;
	switch (r.type) {
	case 'P':
		if ((z = memchr(b, 0, (size_t)(end - b))))
			r.name = strdup((const char *)b);
		break;
	case 'C':
	case 'D':
		if (b < end) {
			r.kind = b[0];
			if (r.type == 'C' && r.kind == 'S' && (z = memchr(b + 1, 0, (size_t)(end - b - 1))))
				r.name = strdup((const char *)b + 1);
		}
		break;
	case 'H':
		return; /* Flush: no answer */
	case 'B':
	case 'E':
	case 'S':
	case 'Q':
		break;
	default:
		model.off = true; /* COPY, FunctionCall...: not modelled */
		return;
	}
	if (model.n == model.cap) {
		model.cap = model.cap ? model.cap * 2 : 64;
		model.q = realloc(model.q, model.cap * sizeof(*model.q));
		if (!model.q)
			abort();
	}
	model.q[model.n++] = r;
}

static struct mreq *model_head(void)
{
	return model.head < model.n ? &model.q[model.head] : NULL;
}

static void model_pop(void)
{
	free(model.q[model.head].name);
	if (++model.head == model.n)
		model.head = model.n = 0;
}

static void model_answer(const uint8_t *m, uint32_t total)
{
	if (model.off)
		return;
	struct mreq *r = model_head();
	uint8_t t = m[0];
	if (t == 'N' || t == 'S' || t == 'A')
		return;
	if (!r) {
		model.off = true;
		return;
	}
	switch (t) {
	case '1':
		if (r->type != 'P')
			break;
		if (r->name && *r->name) {
			if (strncmp(r->name, PS_SERVER_PREFIX, sizeof(PS_SERVER_PREFIX) - 1) == 0 &&
			    model_find(r->name) != SIZE_MAX)
				abort(); /* PostgreSQL: prepared statement already exists */
			if (model.nhave == model.caphave) {
				model.caphave = model.caphave ? model.caphave * 2 : 16;
				model.have = realloc(model.have, model.caphave * sizeof(*model.have));
				if (!model.have)
					abort();
			}
			model.have[model.nhave++] = r->name;
			r->name = NULL;
		}
		model_pop();
		return;
	case '2':
		if (r->type != 'B')
			break;
		model_pop();
		return;
	case '3':
		if (r->type != 'C')
			break;
		if (r->name) {
			size_t i = model_find(r->name);
			if (i != SIZE_MAX) {
				free(model.have[i]);
				model.have[i] = model.have[--model.nhave];
			}
		}
		model_pop();
		return;
	case 't':
		if (r->type != 'D' || r->kind != 'S')
			break;
		return;
	case 'T':
	case 'n':
		if (r->type == 'D') {
			model_pop();
			return;
		}
		if (r->type == 'Q' && t == 'T')
			return;
		break;
	case 'D':
		if (r->type == 'E' || r->type == 'Q')
			return;
		break;
	case 'C':
		if (total > 5 + 7 && (memcmp(m + 5, "DISCARD", 7) == 0 || memcmp(m + 5, "DEALLOC", 7) == 0))
			model_clear_have(); /* which ones the text removed is not known: all */
		__attribute__((fallthrough));
	case 'I':
	case 's':
		if (r->type == 'E') {
			model_pop();
			return;
		}
		if (r->type == 'Q' && t != 's')
			return;
		break;
	case 'E':
		if (r->type == 'Q' || r->type == 'S')
			return; /* ends with ReadyForQuery; nothing is skipped */
		while ((r = model_head()) && r->type != 'S')
			model_pop();
		return;
	case 'Z':
		if (r->type != 'S' && r->type != 'Q')
			break;
		model_pop();
		return;
	default:
		break;
	}
	model.off = true;
}

/* Everything sent so far is read back; a side left mid-message is a broken
 * stream once no more can come (end of a link or of the input). */
static void streams_check(bool at_end)
{
	stream_read(sp_client[1], &to_client);
	stream_read(sp_server[1], &to_server);
	if (at_end && (to_client.len || to_server.len))
		abort();
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			abort(); /* STEP_MAX keeps every step within the socket buffer */
		p += w;
		n -= (size_t)w;
	}
}

static void set_nonblock_big(int fd)
{
	int sz = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		abort();
}

static struct pgt_config cfg;
static struct pgt_pool pool;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp_client) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sp_server) < 0)
		abort();
	for (int i = 0; i < 2; i++) {
		set_nonblock_big(sp_client[i]);
		set_nonblock_big(sp_server[i]);
	}
	pgt.cfg = &cfg;
	return 0;
}

/* ---- one input ---- */

struct session {
	struct pgt_server *s;
	struct pgt_client *k[2]; /* k[cur] is the one the server is (or was last) linked to */
	int cur;
	bool linked;   /* s->client is k[cur] */
	bool draining; /* the client vanished: s finishes what it left */
	bool over;     /* a connection died: nothing more happens */
	uint8_t *held; /* the message a held client waits to have processed */
	uint32_t held_len;
	uint32_t max;
};

static struct pgt_client *client_new(void)
{
	struct pgt_client *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->conn.fd = sp_client[0];
	c->conn.kind = CONN_CLIENT;
	c->conn.ops = &client_ops;
	c->pool = &pool;
	c->state = CL_ACTIVE;
	return c;
}

static void check_invariants(const struct session *x)
{
	const struct pgt_server *s = x->s;
	const struct ps_server *ps = s->ps;
	if (ps) {
		if (ps->qtail - ps->qhead > ps->qcap || (ps->qcap & (ps->qcap - 1)) != 0)
			abort();
		/* not ps->n <= max: the evictions of a segment skipped after an
		 * error are undone, and the statements come back (as "unknown"),
		 * above the limit until the next messages make room again */
		uint64_t nst, bytes;
		ps_mem_stats(&nst, &bytes);
		if (ps->n > nst)
			abort(); /* each entry holds a statement that is still there */
	}
	if (x->held && !x->over) {
		/* a held client goes on only once a request is answered */
		if (!ps_server_busy(s) && !s->conn.barrier)
			abort();
	}
}

static bool dead(struct session *x)
{
	if (x->s->conn.dead || x->k[x->cur]->conn.dead)
		x->over = true;
	return x->over;
}

/* server.c drain_sync(): the Sync pgtenant sends for a vanished client. */
static bool drain_sync(struct session *x)
{
	static const uint8_t sync[] = {'S', 0, 0, 0, 4};
	struct pgt_server *s = x->s;
	send_all(sp_server[0], sync, sizeof(sync));
	s->sent_since_rfq = false;
	s->expect_rfq++;
	if (!ps_server_sync(s)) {
		x->over = true;
		return false;
	}
	return true;
}

/* server_drain_check: nothing of the vanished client's is left to answer,
 * so the connection goes back to the pool (or is closed): it must not still
 * be skipping to a Sync nobody will send, or the next client's messages
 * would be taken for skipped ones. */
static void drained(struct session *x)
{
	if (ps_server_skipping(x->s) || x->s->sent_since_rfq)
		abort();
	x->over = true;
}

/* The end of a transaction (server_on_barrier -> server_release). */
static void release(struct session *x)
{
	struct pgt_server *s = x->s;
	(void)ps_server_take_uses(s);
	if (s->ps && s->ps->uses)
		abort();
	s->client = NULL;
	x->k[x->cur]->server = NULL;
	x->linked = false;
	streams_check(true);
}

/* server_link + server_begin's choice for the reset. */
static void relink(struct session *x, uint8_t sel)
{
	struct pgt_server *s = x->s;
	if (sel & 8)
		x->cur ^= 1;
	struct pgt_client *c = x->k[x->cur];
	if (ps_server_busy(s) || ps_server_skipping(s))
		abort(); /* released between transactions: nothing may be in flight */
	if (sel & 4) {
		ps_server_forget(s);
		if (ps_server_count(s) != 0)
			abort();
		model_clear_have(); /* the reset's DISCARD ALL */
	}
	s->client = c;
	c->server = s;
	s->expect_rfq = 0;
	s->sent_since_rfq = false;
	s->ps_untracked = 0;
	s->hint = 0;
	x->linked = true;
}

static void client_msg(struct session *x, uint8_t *m, uint32_t total);

/* The message marked by sbuf_set_barrier is sent: server_on_barrier. */
static void barrier(struct session *x)
{
	struct pgt_server *s = x->s;
	if (!s->conn.barrier || x->over)
		return;
	s->conn.barrier = false;
	struct pgt_client *c = x->k[x->cur];
	ps_server_barrier(s);
	if (dead(x))
		return;
	if (x->held && !c->conn.hold) {
		/* sbuf_resume pumps the client: its message comes again at once */
		uint8_t *m = x->held;
		x->held = NULL;
		client_msg(x, m, x->held_len);
		free(m);
		if (x->over)
			return;
	}
	if (x->linked && s->txn == 'I' && s->expect_rfq == 0 && !s->sent_since_rfq && !ps_server_busy(s))
		release(x);
}

/* client.c active_packet() from ps_client_packet on. */
static void client_msg(struct session *x, uint8_t *m, uint32_t total)
{
	struct pgt_server *s = x->s;
	struct pgt_client *c = x->k[x->cur];
	struct pgt_pkt pkt = {.data = m, .total = total, .avail = total, .type = m[0], .full = true};
	enum sbuf_verdict v = ps_client_packet(c, s, &pkt);
	if (v == SB_NEED_FULL)
		abort(); /* the message is whole: asking for it whole again would loop */
	if (v == SB_GONE || dead(x)) {
		x->over = true;
		return;
	}
	if (v == SB_HOLD) {
		x->held = malloc(total);
		if (!x->held)
			abort();
		memcpy(x->held, m, total);
		x->held_len = total;
		c->conn.hold = true;
		return;
	}
	switch (pkt.type) {
	case 'P':
	case 'B':
		s->sent_since_rfq = true;
		break;
	case 'Q':
	case 'S':
	case 'F':
		if (v == SB_SKIP && pkt.type != 'S' && ps_server_skipping(s))
			break;
		s->expect_rfq++;
		s->sent_since_rfq = false;
		break;
	case 'd':
	case 'c':
	case 'f':
		break;
	default:
		s->sent_since_rfq = true;
		break;
	}
	if (v == SB_FORWARD) {
		if (pkt.skip_head > total)
			abort();
		send_all(sp_server[0], m + pkt.skip_head, total - pkt.skip_head);
	} else if (pkt.skip_head) {
		abort(); /* a head left out of a message that is not forwarded */
	}
}

/* server.c command_tag(). */
static void command_tag(struct pgt_server *s, const struct pgt_pkt *pkt)
{
	if (pkt->total < 7 || pkt->data[pkt->total - 1] != '\0')
		return;
	const char *tag = (const char *)pkt->data + 5;
	size_t len = pkt->total - 6;
	if (session_tag_hint(tag, len) && tag[0] == 'D')
		ps_server_tag(s, tag, len);
}

/* server_on_packet/server_packet for a linked client, drain_packet without. */
static void server_msg(struct session *x, uint8_t *m, uint32_t total)
{
	struct pgt_server *s = x->s;
	struct pgt_pkt pkt = {.data = m, .total = total, .avail = total, .type = m[0], .full = true};
	barrier(x); /* sbuf's pump fires a pending barrier before the next message */
	if (x->over)
		return;
	if (!x->linked && !x->draining)
		return;       /* an idle server's messages are not prepare.c's */
	streams_check(false); /* what went out before this answer came */
	model_answer(m, total);
	if (x->linked && (pkt.type == 'D' || (pkt.type == 'T' && (s->ps_untracked || !ps_server_busy(s))))) {
		send_all(sp_client[0], m, total);
		return;
	}
	int v = PS_PASS;
	if (pkt.type != 'D' && !s->ps_untracked) {
		v = ps_server_packet(s, &pkt);
		if (v == SB_NEED_FULL)
			abort();
		if (v == SB_GONE || dead(x)) {
			x->over = true;
			return;
		}
		if (v == SB_HOLD)
			abort(); /* no verdict of prepare.c's for a server */
		if (!x->linked && s->sent_since_rfq && !drain_sync(x))
			return; /* the error made the server skip a Query: drain_packet's Sync */
	}
	if (v == SB_SKIP)
		return;
	switch (pkt.type) {
	case 'Z':
		s->txn = total > 5 ? (char)m[5] : 'I';
		if (s->expect_rfq > 0)
			s->expect_rfq--;
		if (s->ps_untracked)
			s->ps_untracked--;
		if (x->linked && s->txn == 'I' && s->expect_rfq == 0 && !s->sent_since_rfq)
			sbuf_set_barrier(&s->conn);
		break;
	case 'C':
		command_tag(s, &pkt);
		break;
	default:
		break;
	}
	if (x->linked)
		send_all(sp_client[0], m, total);
	else if (!ps_server_busy(s) && s->expect_rfq == 0)
		drained(x);
}

/* client_close -> server_abandon: the client is gone, the server drains. */
static void vanish(struct session *x)
{
	struct pgt_server *s = x->s;
	struct pgt_client *c = x->k[x->cur];
	free(x->held);
	x->held = NULL;
	ps_client_free(c);
	s->client = NULL;
	c->server = NULL;
	x->linked = false;
	x->draining = true;
	if (s->sent_since_rfq && !drain_sync(x))
		return;
	if (!ps_server_busy(s) && s->expect_rfq == 0)
		drained(x);
}

/* The next message of the input, as a copy of exactly its size (so that a
 * read past it is ASan's to see). */
static uint8_t *next_msg(const uint8_t **p, const uint8_t *end, uint32_t *total)
{
	if (end - *p < 5)
		return NULL;
	uint32_t len = proto_be32(*p + 1);
	if (len < 4 || len > STEP_MAX || len - 4 > (size_t)(end - *p - 5))
		return NULL;
	*total = len + 1;
	uint8_t *m = malloc(*total);
	if (!m)
		abort();
	memcpy(m, *p, *total);
	*p += *total;
	return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *p = data + 1, *end = data + size;
	struct session x = {0};
	model_reset();
	x.max = (data[0] & 4) ? 100 : 1u + (data[0] & 3);
	cfg.max_prepared_statements = (int)x.max;
	x.s = calloc(1, sizeof(*x.s));
	if (!x.s)
		abort();
	x.s->conn.fd = sp_server[0];
	x.s->conn.kind = CONN_SERVER;
	x.s->conn.ops = &server_ops;
	x.s->pool = &pool;
	x.s->ps_on = true;
	x.s->session_track = true;
	x.s->txn = 'I';
	x.k[0] = client_new();
	x.k[1] = client_new();

	int steps = 0;
	while (p < end && !x.over && steps++ < 4096) {
		uint8_t sel = *p++;
		uint32_t total = 0;
		uint8_t *m = NULL;
		if ((sel & 3) < 2 && !(m = next_msg(&p, end, &total)))
			break;
		switch (sel & 3) {
		case 0:
			if (x.draining || x.held)
				break; /* a held client's next message waits in its buffer */
			if (!x.linked)
				relink(&x, sel);
			if (m[0] == 'X')
				vanish(&x);
			else
				client_msg(&x, m, total);
			break;
		case 1:
			server_msg(&x, m, total);
			break;
		case 2:
			barrier(&x);
			break;
		default:
			if (x.linked)
				vanish(&x);
			break;
		}
		free(m);
		streams_check(false);
		check_invariants(&x);
	}

	/* everything goes, as client_close and server_free_dead free it */
	streams_check(!x.over);
	free(x.held);
	ps_client_free(x.k[0]);
	ps_client_free(x.k[1]);
	ps_server_free(x.s);
	free(x.k[0]);
	free(x.k[1]);
	free(x.s);
	model_reset();
	/* a message cut short by a dead connection is not the stream's fault */
	to_client.len = to_server.len = 0;
	uint64_t nst, bytes;
	ps_mem_stats(&nst, &bytes);
	if (nst != 0 || bytes != 0)
		abort(); /* every statement text is released with its last user */
	return 0;
}
