/*
 * Buffered forwarding (see sbuf.h for the model and the buffer invariant).
 *
 * Syscall budget on the hot path: one recv() per readable event and one
 * send() per batch of parsed messages.  Events are level-triggered and
 * persistent; the registration changes only when back-pressure or a hold
 * changes what a connection waits for, so a steady stream of transactions
 * causes no epoll_ctl() at all.
 */
#include "sbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "proto.h"
#include "tls.h"

static uint32_t bufsize = 8192;
static struct pgt_iobuf *free_bufs;
static int nbufs_used, nbufs_free;

void sbuf_global_init(uint32_t size)
{
	bufsize = size;
}

void sbuf_mem_stats(int *used, int *nfree, uint32_t *size)
{
	*used = nbufs_used;
	*nfree = nbufs_free;
	*size = bufsize;
}

static struct pgt_iobuf *buf_get(void)
{
	struct pgt_iobuf *b = free_bufs;
	if (b) {
		free_bufs = b->next_free;
		nbufs_free--;
	} else {
		b = malloc(sizeof(*b) + bufsize);
		if (!b)
			return NULL;
	}
	nbufs_used++;
	return b;
}

static void buf_put(struct pgt_iobuf *b)
{
	nbufs_used--;
	/* keep a bounded reserve so that a burst does not leave memory pinned forever */
	if (nbufs_free >= 256) {
		free(b);
		return;
	}
	b->next_free = free_bufs;
	free_bufs = b;
	nbufs_free++;
}

static void conn_event_cb(evutil_socket_t fd, short what, void *arg);

/* send(), or SSL_write() on a TLS connection (tls.h) */
static inline ssize_t io_send(struct pgt_conn *c, const void *p, size_t n)
{
	ssize_t w = __builtin_expect(c->ssl != NULL, 0) ? tls_send(c, p, n) : send(c->fd, p, n, MSG_NOSIGNAL);
	if (w > 0)
		c->bytes_out += (uint64_t)w;
	return w;
}

/* The size of c's buffer: the common one, or a larger one of its own while
 * a message that must be read whole does not fit (SBUF_MAX_WHOLE). */
static inline uint32_t cap(const struct pgt_conn *c)
{
	return c->bigcap ? c->bigcap : bufsize;
}

static inline void buf_release(struct pgt_conn *c)
{
	if (__builtin_expect(c->bigcap != 0, 0)) {
		free(c->buf);
		c->bigcap = 0;
	} else {
		buf_put(c->buf);
	}
	c->buf = NULL;
}

void sbuf_init(struct pgt_conn *c, int fd, uint8_t kind, const struct conn_ops *ops)
{
	c->fd = fd;
	c->kind = kind;
	c->ops = ops;
	c->ev_mask = 0;
	c->id = ++pgt.next_conn_id;
	c->connect_time = c->request_time = loop_now();
}

static bool wants_read(const struct pgt_conn *c)
{
	if (c->dead || c->connecting || c->blocked)
		return false;
	if (__builtin_expect(c->tls_hs, 0))
		return !c->tls_hs_write;
	if (c->buf && c->recv_pos >= cap(c))
		return false; /* full: a hold or an oversized message; parsing frees room */
	return true;
}

static bool wants_write(const struct pgt_conn *c)
{
	if (c->dead)
		return false;
	if (__builtin_expect(c->tls_hs, 0))
		return c->tls_hs_write;
	if (c->connecting || c->outq || c->pre || c->tls_rd_wants_write)
		return true;
	struct pgt_conn *src = c->ops->peer ? c->ops->peer((struct pgt_conn *)c) : NULL;
	return src && src->blocked && src->ops->peer(src) == c;
}

void sbuf_update_events(struct pgt_conn *c)
{
	if (c->dead)
		return;
	short want = (short)((wants_read(c) ? EV_READ : 0) | (wants_write(c) ? EV_WRITE : 0));
	if (want == c->ev_mask)
		return;
	if (c->ev_mask)
		event_del(&c->ev);
	short was = c->ev_mask;
	c->ev_mask = want;
	if (want) {
		event_assign(&c->ev, pgt.base, c->fd, (short)(want | EV_PERSIST), conn_event_cb, c);
		event_add(&c->ev, NULL);
		/* bytes OpenSSL holds already will not make the socket readable */
		if (__builtin_expect(c->ssl != NULL, 0) && (want & EV_READ) && !(was & EV_READ) &&
		    tls_pending(c))
			event_active(&c->ev, EV_READ, 1);
	}
}

static void release_buf_if_empty(struct pgt_conn *c)
{
	if (c->buf && c->send_pos == c->recv_pos && !c->blocked) {
		c->recv_pos = c->parse_pos = c->send_pos = 0;
		if (!c->hold)
			buf_release(c);
	}
}

#define OUTQ_CHUNK 8192
#define OUTQ_CAP (OUTQ_CHUNK - sizeof(struct pgt_outq))
/* Chunks of the common size kept for reuse: a transaction-mode client whose
 * statements pgtenant prepares on the way needs one per transaction, which
 * is then no malloc() per transaction. */
#define OUTQ_SPARE_MAX 16
static struct pgt_outq *outq_spare;
static int outq_nspare;

static struct pgt_outq *chunk_get(size_t cap)
{
	if (cap == OUTQ_CAP && outq_spare) {
		struct pgt_outq *q = outq_spare;
		outq_spare = q->next;
		outq_nspare--;
		return q;
	}
	return malloc(sizeof(struct pgt_outq) + cap);
}

static void chunk_put(struct pgt_outq *q)
{
	if (q->cap == OUTQ_CAP && outq_nspare < OUTQ_SPARE_MAX) {
		q->next = outq_spare;
		outq_spare = q;
		outq_nspare++;
		return;
	}
	free(q);
}

/* Append to the outq: O(1), whatever is queued already. */
static bool outq_append(struct pgt_conn *c, const uint8_t *data, size_t len)
{
	struct pgt_outq *head = c->outq, *t = head ? head->tail : NULL;
	if (t && t->cap - t->len >= len) {
		memcpy(t->data + t->len, data, len);
		t->len += (uint32_t)len;
		return true;
	}
	size_t cap = PGT_MAX(len, OUTQ_CAP);
	if (cap > UINT32_MAX)
		return false;
	struct pgt_outq *q = chunk_get(cap);
	if (!q)
		return false;
	q->next = q->tail = NULL;
	q->pos = 0;
	q->len = (uint32_t)len;
	q->cap = (uint32_t)cap;
	memcpy(q->data, data, len);
	if (t) {
		t->next = q;
		head->tail = q;
	} else {
		q->tail = q;
		c->outq = q;
	}
	return true;
}

static void outq_free(struct pgt_conn *c)
{
	while (c->outq) {
		struct pgt_outq *q = c->outq;
		c->outq = q->next;
		chunk_put(q);
	}
}

/* The prefix goes out before anything queued after it: move what is left
 * of it into the outq. */
static bool prefix_to_outq(struct pgt_conn *c)
{
	struct pgt_prefix *pre = c->pre;
	c->pre = NULL;
	for (int i = 0; pre && i < pre->n; i++)
		if (pre->iov[i].iov_len && !outq_append(c, pre->iov[i].iov_base, pre->iov[i].iov_len))
			return false;
	return true;
}

/* Try to write the outq; false on socket error. */
static bool flush_outq(struct pgt_conn *c)
{
	while (c->outq) {
		struct pgt_outq *q = c->outq;
		if (q->pos < q->len) {
			ssize_t n = io_send(c, q->data + q->pos, q->len - q->pos);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return true;
				return false;
			}
			q->pos += (uint32_t)n;
			if (q->pos < q->len)
				continue;
		}
		c->outq = q->next;
		if (c->outq)
			c->outq->tail = q->tail;
		chunk_put(q);
	}
	return true;
}

void sbuf_set_prefix(struct pgt_conn *c, struct pgt_prefix *pre)
{
	c->pre = pre;
}

enum sbuf_verdict sbuf_hold_until_sent(struct pgt_conn *c)
{
	c->hold_outq = true;
	return SB_HOLD;
}

bool sbuf_send_raw(struct pgt_conn *c, const void *data, size_t len)
{
	if (c->dead)
		return false;
	size_t done = 0;
	if (c->pre && !prefix_to_outq(c))
		return false;
	if (!c->outq) {
		while (done < len) {
			ssize_t n = io_send(c, (const uint8_t *)data + done, len - done);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				return false;
			}
			done += (size_t)n;
		}
		if (done == len)
			return true;
	}
	/* the rest waits for the socket (cold path: login, errors, admin output) */
	if (!outq_append(c, (const uint8_t *)data + done, len - done))
		return false;
	sbuf_update_events(c);
	return true;
}

/* send() of data, preceded by dst's prefix if it has one, in one syscall.
 * Returns the number of bytes of data sent (0 when the prefix is not all
 * out: what is left of it then waits in the outq), or -1 with errno. */
static ssize_t send_forward(struct pgt_conn *dst, const uint8_t *data, size_t len)
{
	struct pgt_prefix *pre = dst->pre;
	if (!pre) {
		ssize_t w = send(dst->fd, data, len, MSG_NOSIGNAL);
		if (w > 0)
			dst->bytes_out += (uint64_t)w;
		return w;
	}
	struct iovec iov[3];
	int n = 0;
	size_t prelen = 0;
	for (int i = 0; i < pre->n; i++) {
		iov[n++] = pre->iov[i];
		prelen += pre->iov[i].iov_len;
	}
	iov[n].iov_base = (void *)data;
	iov[n++].iov_len = len;
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
	ssize_t w = sendmsg(dst->fd, &mh, MSG_NOSIGNAL);
	if (w < 0)
		return w;
	dst->bytes_out += (uint64_t)w;
	dst->pre = NULL;
	if ((size_t)w >= prelen)
		return w - (ssize_t)prelen;
	/* a short write inside the prefix: keep the rest, in order, for later */
	size_t skip = (size_t)w;
	for (int i = 0; i < pre->n; i++) {
		size_t l = pre->iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		if (!outq_append(dst, (const uint8_t *)pre->iov[i].iov_base + skip, l - skip)) {
			errno = ENOMEM;
			return -1;
		}
		skip = 0;
	}
	errno = EAGAIN;
	return -1;
}

/*
 * flush() towards a TLS peer.  OpenSSL must be offered the same bytes again
 * after a write that blocked, so whatever a blocked SSL_write() was offered
 * becomes the head of dst's outq, as one run (a copy, but only under
 * back-pressure); the source then waits for the outq to drain exactly as it
 * waits for a full socket.  pgtenant's own bytes and forwarded ones go out
 * as one record when they fit.
 */
#define TLS_GATHER 16384 /* one TLS record of plaintext */
static uint8_t tls_gather[TLS_GATHER];

static bool flush_tls(struct pgt_conn *c, struct pgt_conn *dst)
{
	if (dst->pre && !prefix_to_outq(dst)) {
		dst->ops->on_close(dst, "out of memory", false);
		return !c->dead;
	}
	for (;;) {
		size_t len = c->parse_pos - c->send_pos;
		if (len == 0) {
			bool was = c->blocked;
			c->blocked = false;
			if (was)
				sbuf_update_events(dst);
			return true;
		}
		const uint8_t *data = c->buf->data + c->send_pos;
		struct pgt_outq *q = dst->outq;
		ssize_t w;
		if (q) {
			size_t ql = q->len - q->pos;
			if (q->next || ql >= TLS_GATHER) {
				if (!flush_outq(dst)) {
					dst->ops->on_close(dst, "send failed", false);
					return !c->dead;
				}
				if (dst->outq)
					goto blocked;
				continue;
			}
			size_t take = PGT_MIN(len, TLS_GATHER - ql);
			memcpy(tls_gather, q->data + q->pos, ql);
			memcpy(tls_gather + ql, data, take);
			w = tls_send(dst, tls_gather, ql + take);
			if (w > 0)
				dst->bytes_out += (uint64_t)w;
			if (w < 0) {
				if (errno != EAGAIN)
					goto failed;
				if (q->cap >= ql + take) {
					memcpy(q->data, tls_gather, ql + take);
					q->pos = 0;
					q->len = (uint32_t)(ql + take);
				} else {
					dst->outq = NULL;
					chunk_put(q);
					if (!outq_append(dst, tls_gather, ql + take))
						goto oom;
				}
				c->send_pos += (uint32_t)take;
				goto blocked;
			}
			if ((size_t)w < ql) {
				q->pos += (uint32_t)w;
				continue;
			}
			dst->outq = NULL;
			chunk_put(q);
			c->send_pos += (uint32_t)((size_t)w - ql);
			continue;
		}
		w = tls_send(dst, data, len);
		if (w > 0) {
			dst->bytes_out += (uint64_t)w;
			c->send_pos += (uint32_t)w;
			continue;
		}
		if (errno != EAGAIN)
			goto failed;
		if (!outq_append(dst, data, len))
			goto oom;
		c->send_pos = c->parse_pos;
		goto blocked;
	}
blocked:
	c->blocked = true;
	sbuf_update_events(dst);
	return true;
failed:
	dst->ops->on_close(dst, strerror(errno), false);
	return !c->dead;
oom:
	dst->ops->on_close(dst, "out of memory", false);
	return !c->dead;
}

/*
 * Send [send_pos, parse_pos) to the peer.  Returns false if c died (the
 * peer's failure can take c down with it).  On a short write sets blocked.
 */
static bool flush(struct pgt_conn *c)
{
	if (c->send_pos == c->parse_pos) {
		c->blocked = false;
		if (c->inject_pending) {
			/* bytes a handler injected, with nothing forwarded after them */
			c->inject_pending = false;
			struct pgt_conn *dst = c->ops->peer(c);
			if (dst && !dst->dead && dst->outq) {
				if (!flush_outq(dst)) {
					dst->ops->on_close(dst, "send failed", false);
					return !c->dead;
				}
				if (dst->outq)
					sbuf_update_events(dst);
			}
		}
		return true;
	}
	struct pgt_conn *dst = c->ops->peer(c);
	if (!dst || dst->dead) {
		/* nobody to forward to (peer gone): drop, the owner is closing */
		c->send_pos = c->parse_pos;
		c->blocked = false;
		return !c->dead;
	}
	c->inject_pending = false;
	if (__builtin_expect(dst->ssl != NULL, 0))
		return flush_tls(c, dst);
	if (dst->outq) {
		if (dst->pre && !prefix_to_outq(dst)) {
			dst->ops->on_close(dst, "out of memory", false);
			return !c->dead;
		}
		struct pgt_outq *q = dst->outq;
		if (!q->next && !c->blocked) {
			/* pgtenant's own bytes and the forwarded ones in one sendmsg() */
			size_t ql = q->len - q->pos;
			struct iovec iov[2] = {{q->data + q->pos, ql},
			                       {c->buf->data + c->send_pos, c->parse_pos - c->send_pos}};
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
			ssize_t w;
			do {
				w = sendmsg(dst->fd, &mh, MSG_NOSIGNAL);
			} while (w < 0 && errno == EINTR);
			if (w > 0)
				dst->bytes_out += (uint64_t)w;
			if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
				dst->ops->on_close(dst, strerror(errno), false);
				return !c->dead;
			}
			if (w < (ssize_t)ql) {
				if (w > 0)
					q->pos += (uint32_t)w;
				c->blocked = true;
				sbuf_update_events(dst);
				return true;
			}
			dst->outq = NULL;
			chunk_put(q);
			c->send_pos += (uint32_t)(w - (ssize_t)ql);
			if (c->send_pos == c->parse_pos)
				return true;
		} else if (!flush_outq(dst)) {
			dst->ops->on_close(dst, "send failed", false);
			return !c->dead;
		}
		if (dst->outq) {
			c->blocked = true;
			sbuf_update_events(dst);
			return true;
		}
	}
	for (;;) {
		ssize_t n = send_forward(dst, c->buf->data + c->send_pos, c->parse_pos - c->send_pos);
		if (n > 0) {
			c->send_pos += (uint32_t)n;
			if (c->send_pos == c->parse_pos) {
				bool was = c->blocked;
				c->blocked = false;
				if (was)
					sbuf_update_events(dst);
				return true;
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->blocked = true;
			sbuf_update_events(dst);
			return true;
		}
		dst->ops->on_close(dst, n < 0 ? strerror(errno) : "send returned 0", false);
		return !c->dead;
	}
}

bool sbuf_inject(struct pgt_conn *src, const void *data, size_t len)
{
	struct pgt_conn *dst = src->ops->peer(src);
	if (!dst || dst->dead)
		return true; /* nobody to tell: the owner is closing */
	if (src->buf && src->send_pos < src->parse_pos) {
		if (!flush(src))
			return false;
		if (dst->dead)
			return true;
		if (src->send_pos < src->parse_pos) {
			/* the peer's socket is full: what src parsed goes first, so it
			 * joins the peer's outq (a copy only under back-pressure) */
			if ((dst->pre && !prefix_to_outq(dst)) ||
			    !outq_append(dst, src->buf->data + src->send_pos,
			                 src->parse_pos - src->send_pos)) {
				dst->ops->on_close(dst, "out of memory", false);
				return false;
			}
			src->send_pos = src->parse_pos;
		}
	}
	if (src->in_pump) {
		/* the pump sends it with what it forwards next, or at its end */
		if ((dst->pre && !prefix_to_outq(dst)) || !outq_append(dst, data, len)) {
			dst->ops->on_close(dst, "out of memory", false);
			return false;
		}
		src->inject_pending = true;
		return true;
	}
	if (!sbuf_send_raw(dst, data, len)) {
		dst->ops->on_close(dst, "send failed", false);
		return false;
	}
	return true;
}

bool sbuf_flush_parsed(struct pgt_conn *c)
{
	if (c->dead || !c->buf)
		return !c->dead;
	return flush(c);
}

void sbuf_set_barrier(struct pgt_conn *c)
{
	c->barrier = true;
}

static bool pump_inner(struct pgt_conn *c);

static bool pump(struct pgt_conn *c)
{
	bool was = c->in_pump;
	c->in_pump = true;
	bool ok = pump_inner(c);
	c->in_pump = was;
	return ok;
}

static bool pump_inner(struct pgt_conn *c)
{
	for (;;) {
		if (c->dead)
			return false;
		if (c->hold || !c->buf)
			break;
		uint32_t avail = c->recv_pos - c->parse_pos;
		if (c->pkt_remain == 0) {
			if (c->barrier) {
				if (!flush(c))
					return false;
				if (c->blocked)
					break;
				c->barrier = false;
				c->ops->on_barrier(c);
				continue;
			}
			if (avail == 0)
				break;
			struct proto_hdr hdr;
			const uint8_t *p = c->buf->data + c->parse_pos;
			enum proto_result r = c->startup_mode
			                          ? proto_parse_startup_header(p, avail, &hdr)
			                          : proto_parse_header(p, avail, 0x7fffffffu, &hdr);
			if (r == PROTO_NEED_MORE) {
				if (c->parse_pos + 5 > cap(c) && c->send_pos == c->parse_pos) {
					memmove(c->buf->data, p, avail);
					c->send_pos = c->parse_pos = 0;
					c->recv_pos = avail;
				}
				break;
			}
			if (r == PROTO_BAD) {
				c->ops->on_close(c, "invalid message length", true);
				return false;
			}
			struct pgt_pkt pkt = {.data = p,
			                      .total = hdr.total,
			                      .avail = avail,
			                      .type = hdr.type,
			                      .full = avail >= hdr.total};
			enum sbuf_verdict v = c->ops->on_packet(c, &pkt);
			if (v == SB_NEED_FULL) {
				if (pkt.want && pkt.want < hdr.total)
					hdr.total = pkt.want;
				if (hdr.total > cap(c)) {
					if (!pkt.grow || hdr.total > SBUF_MAX_WHOLE) {
						c->ops->on_close(c, "message too large", true);
						return false;
					}
					/* a buffer of its own for this message (freed once empty),
					 * growing as the bytes come, not as the length claims */
					if (!flush(c))
						return false;
					if (c->blocked)
						break;
					uint32_t ncap =
					    PGT_MIN(hdr.total, PGT_MAX(cap(c) * 4u, avail + avail / 2));
					struct pgt_iobuf *nb = malloc(sizeof(*nb) + ncap);
					if (!nb) {
						c->ops->on_close(c, "out of memory for a large message",
						                 false);
						return false;
					}
					memcpy(nb->data, c->buf->data + c->parse_pos, avail);
					buf_release(c);
					c->buf = nb;
					c->bigcap = ncap;
					c->send_pos = c->parse_pos = 0;
					c->recv_pos = avail;
					break;
				}
				/* make room: move the partial message to the buffer start */
				if (c->parse_pos + hdr.total > cap(c)) {
					if (!flush(c))
						return false;
					if (c->blocked)
						break;
					memmove(c->buf->data, c->buf->data + c->parse_pos, avail);
					c->send_pos = c->parse_pos = 0;
					c->recv_pos = avail;
				}
				break; /* wait for the rest */
			}
			switch (v) {
			case SB_FORWARD:
				if (__builtin_expect(pkt.full && !pkt.skip_head && !c->dead, 1)) {
					/* the common case, whole and as it is: on to the next */
					c->parse_pos += hdr.total;
					continue;
				}
				c->pkt_skip = 0;
				c->pkt_remain = hdr.total;
				if (pkt.skip_head) {
					/* the handler injected a replacement for the head:
					 * everything before it is sent, the head is dropped */
					if (c->send_pos < c->parse_pos && !flush(c))
						return false;
					if (c->send_pos < c->parse_pos) {
						c->ops->on_close(
						    c, "internal error: head skip under back-pressure",
						    false);
						return false;
					}
					c->parse_pos += pkt.skip_head;
					c->send_pos = c->parse_pos;
					c->pkt_remain -= pkt.skip_head;
				}
				break;
			case SB_SKIP:
				/* pkt.total: the handler may have taken several whole
				 * messages it checked at once (never more than avail) */
				c->pkt_skip = 1;
				c->pkt_remain = PGT_MAX(hdr.total, PGT_MIN(pkt.total, avail));
				break;
			case SB_HOLD:
				c->hold = true;
				goto out;
			case SB_GONE:
				return false;
			default:
				break;
			}
			if (c->dead)
				return false;
		}
		if (c->pkt_skip && c->send_pos < c->parse_pos) {
			if (!flush(c))
				return false;
			if (c->blocked)
				break;
		}
		uint32_t n = PGT_MIN(c->pkt_remain, c->recv_pos - c->parse_pos);
		if (n == 0)
			break;
		c->parse_pos += n;
		c->pkt_remain -= n;
		if (c->pkt_skip)
			c->send_pos = c->parse_pos;
	}
out:
	if (!flush(c))
		return false;
	if (!c->blocked && c->buf) {
		if (c->send_pos == c->recv_pos) {
			release_buf_if_empty(c);
		} else if (c->send_pos > 0 && c->recv_pos > cap(c) / 2) {
			/* everything before send_pos is gone: move the rest (a partial
			 * header or message, or held data) to the front so reading can go on */
			uint32_t left = c->recv_pos - c->send_pos;
			memmove(c->buf->data, c->buf->data + c->send_pos, left);
			c->parse_pos -= c->send_pos;
			c->recv_pos = left;
			c->send_pos = 0;
		}
	}
	return true;
}

/* After a pump: most often the connection still only waits to read, and
 * nothing of its own says otherwise.  A peer blocked on its socket would
 * have added EV_WRITE to its mask when it blocked (flush), so a mask of
 * EV_READ alone means none is. */
static inline void update_events_after_pump(struct pgt_conn *c)
{
	if (__builtin_expect(c->ssl != NULL, 0)) {
		sbuf_update_events(c);
		/* a hold released, or room made: bytes OpenSSL holds need no event */
		if (!c->dead && (c->ev_mask & EV_READ) && wants_read(c) && tls_pending(c))
			event_active(&c->ev, EV_READ, 1);
		return;
	}
	if (c->ev_mask == EV_READ && !c->blocked && !c->connecting && !c->outq && !c->pre &&
	    (!c->buf || c->recv_pos < cap(c)))
		return;
	sbuf_update_events(c);
}

bool sbuf_pump(struct pgt_conn *c)
{
	bool ok = pump(c);
	if (ok)
		update_events_after_pump(c);
	return ok;
}

bool sbuf_resume(struct pgt_conn *c)
{
	if (c->dead)
		return false;
	c->hold = false;
	return sbuf_pump(c);
}

static void conn_read(struct pgt_conn *c)
{
	if (!c->buf) {
		if (__builtin_expect(c->tls_peek, 0) && tls_peek_direct(c))
			return;
		c->buf = buf_get();
		if (!c->buf) {
			c->ops->on_close(c, "out of memory for I/O buffer", false);
			return;
		}
		c->recv_pos = c->parse_pos = c->send_pos = 0;
	}
	uint32_t room = cap(c) - c->recv_pos;
	if (room == 0) {
		sbuf_update_events(c);
		return;
	}
	ssize_t n;
	const char *why = NULL;
	if (__builtin_expect(c->ssl != NULL, 0)) {
		/* as much as fits of what OpenSSL has decrypted or read ahead */
		uint8_t *at = c->buf->data + c->recv_pos;
		n = tls_recv(c, at, room, &why);
		while (n > 0 && (uint32_t)n < room && tls_pending(c)) {
			ssize_t m = tls_recv(c, at + n, room - (uint32_t)n, &why);
			if (m <= 0)
				break;
			n += m;
		}
	} else {
		do {
			n = recv(c->fd, c->buf->data + c->recv_pos, room, 0);
		} while (n < 0 && errno == EINTR);
	}
	if (n == 0) {
		c->ops->on_close(c, NULL, false);
		return;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (c->recv_pos == 0 && !c->hold)
				buf_release(c);
			if (__builtin_expect(c->tls_rd_wants_write, 0))
				sbuf_update_events(c); /* OpenSSL must write before it can read on */
			return;
		}
		c->ops->on_close(c, why ? why : strerror(errno), false);
		return;
	}
	c->recv_pos += (uint32_t)n;
	c->bytes_in += (uint64_t)n;
	c->request_time = loop_coarse_now();
	sbuf_pump(c);
}

static inline __attribute__((always_inline)) void conn_event(short what, struct pgt_conn *c);

static void conn_event_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	/* libevent's time is per loop iteration: an event may read it once */
	pgt.now_cache = 1;
	conn_event(what, arg);
	pgt.now_cache = 0;
}

/* A connection in a TLS handshake, or waiting for the answer to its
 * SSLRequest (rare: once per TLS connection). */
static __attribute__((noinline)) void conn_event_tls(short what, struct pgt_conn *c)
{
	if (c->tls_hs) {
		tls_event(c, what);
		return;
	}
	if ((what & EV_WRITE) && c->outq && !flush_outq(c)) {
		c->ops->on_close(c, "send failed", false);
		return;
	}
	if (what & EV_READ)
		tls_event(c, what);
	else
		sbuf_update_events(c);
}

static inline __attribute__((always_inline)) void conn_event(short what, struct pgt_conn *c)
{
	if (c->dead)
		return;
	if (__builtin_expect(c->tls_slow, 0)) {
		if (c->tls_rd_wants_write && (what & EV_WRITE)) {
			/* OpenSSL's read wanted to write first: now it can */
			c->tls_rd_wants_write = false;
			sbuf_tls_slow_update(c);
			what = (short)(what | EV_READ);
		} else if (!c->tls_rd_wants_write) {
			conn_event_tls(what, c);
			return;
		}
	}
	if (what & EV_WRITE) {
		if (c->connecting) {
			c->connecting = false;
			c->ops->on_connected(c);
			return;
		}
		if (c->pre && !prefix_to_outq(c)) {
			c->ops->on_close(c, "out of memory", false);
			return;
		}
		if (c->outq && !flush_outq(c)) {
			c->ops->on_close(c, "send failed", false);
			return;
		}
		if (!c->outq && c->hold_outq) {
			/* pgtenant's own output is out: parse the input again */
			c->hold_outq = false;
			if (!sbuf_resume(c))
				return;
		}
		/* the peer's data waits for room in this socket */
		struct pgt_conn *src = c->ops->peer ? c->ops->peer(c) : NULL;
		if (src && src->blocked && !c->outq) {
			if (!flush(src))
				return;
			if (!src->blocked && !pump(src))
				return;
			sbuf_update_events(src);
		}
		if (c->dead)
			return;
		sbuf_update_events(c);
	}
	if ((what & EV_READ) && !c->dead && !c->connecting)
		conn_read(c);
}

void sbuf_close(struct pgt_conn *c)
{
	if (c->ev_mask)
		event_del(&c->ev);
	c->ev_mask = 0;
	if (c->ssl)
		tls_close(c);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->buf)
		buf_release(c);
	outq_free(c);
	c->pre = NULL;
	c->dead = true;
	c->recv_pos = c->parse_pos = c->send_pos = c->pkt_remain = 0;
}

void sbuf_addr_str(const union pgt_addr *a, char *out, size_t outlen, int *port)
{
	*port = 0;
	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->in.sin_addr, out, (socklen_t)outlen);
		*port = ntohs(a->in.sin_port);
	} else if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->in6.sin6_addr, out, (socklen_t)outlen);
		*port = ntohs(a->in6.sin6_port);
	} else {
		snprintf(out, outlen, "unix");
	}
}
