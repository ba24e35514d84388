/*
 * Buffered, zero-copy forwarding between two sockets (PgBouncer's sbuf idea).
 *
 * Each connection owns an I/O buffer while it has bytes in flight; bytes
 * read from a connection go to its peer.  The protocol layer sees only the
 * header of each message and answers with a verdict: forward it, skip it,
 * hold it (no peer yet), or fetch it whole because pgtenant must read it.
 * Forwarded bytes are sent from the source buffer straight to the peer's
 * socket; a message of any size streams through the fixed-size buffer.
 *
 * Buffer invariant: 0 <= send_pos <= parse_pos <= recv_pos <= bufsize.
 *   [send_pos, parse_pos)  parsed and to be forwarded, not yet sent
 *   [parse_pos, recv_pos)  received, not yet parsed
 * Skipped bytes are never inside [send_pos, parse_pos): the pending region
 * is flushed before a skip, so one send() covers it.
 *
 * Back-pressure: when the peer's socket would block, the source stops
 * reading until the peer drains (its write event resumes the source).
 *
 * Bytes pgtenant originates go out at once when the socket takes them, else
 * into the connection's outq, a chain of chunks (appends are O(1) however
 * much is queued).  A connection may also carry a prefix: bytes pgtenant
 * wants in front of the next forwarded data, sent with it by one sendmsg()
 * (the server-connection reset rides on the client's first message this way).
 *
 * A TLS connection (tls.h) keeps the same model: reads and writes go through
 * OpenSSL instead of recv()/send().  One rule is added, because OpenSSL must
 * be offered the same bytes again after a write that blocked: the bytes of a
 * blocked SSL_write() are always the head of the outq, as one run.  Its
 * prefix is therefore moved into the outq, and forwarded bytes that a
 * blocked write was offered are copied there (only under back-pressure).
 */
#ifndef PGT_SBUF_H
#define PGT_SBUF_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "util.h"

enum sbuf_verdict {
	SB_FORWARD,   /* send the whole message to the peer */
	SB_SKIP,      /* drop the whole message */
	SB_NEED_FULL, /* call again when the whole message is in the buffer */
	SB_HOLD,      /* stop here; the owner calls sbuf_resume() later */
	SB_GONE,      /* the connection was closed by the handler */
};

enum conn_kind { CONN_CLIENT = 1, CONN_SERVER = 2, CONN_CANCEL = 3 };

struct pgt_pkt {
	const uint8_t *data; /* start of the message in the buffer */
	uint32_t total;      /* bytes on the wire, type byte included; a handler
	                      * returning SB_SKIP may raise it to cover several
	                      * whole messages it has checked, up to avail */
	uint32_t avail;      /* bytes in the buffer from data on */
	/* SB_FORWARD: leave out this many bytes at the start of the message
	 * (the handler has sent its own replacement for them with sbuf_inject) */
	uint32_t skip_head;
	/* SB_NEED_FULL: only this many bytes are needed (0 = all of it) */
	uint32_t want;
	uint8_t type; /* 0 for startup-style packets */
	bool full;    /* the whole message is in the buffer */
	/* SB_NEED_FULL: a message larger than the buffer may be read whole
	 * into one of its own (up to SBUF_MAX_WHOLE) */
	bool grow;
};

#define SBUF_MAX_WHOLE (64u << 20)

struct pgt_conn;

struct conn_ops {
	enum sbuf_verdict (*on_packet)(struct pgt_conn *c, struct pgt_pkt *pkt);
	/* A message marked with sbuf_set_barrier() has been fully sent. */
	void (*on_barrier)(struct pgt_conn *c);
	/* EOF, socket error, or malformed data: the owner closes the connection. */
	void (*on_close)(struct pgt_conn *c, const char *reason, bool protocol_error);
	/* Where forwarded bytes go (may be NULL). */
	struct pgt_conn *(*peer)(struct pgt_conn *c);
	/* Non-blocking connect() finished (servers only). */
	void (*on_connected)(struct pgt_conn *c);
	/* The server answered pgtenant's SSLRequest: 'S', 'N' or 'E' (tls.h). */
	void (*on_tls_answer)(struct pgt_conn *c, char answer);
	/* The TLS handshake completed. */
	void (*on_tls_ready)(struct pgt_conn *c);
};

struct pgt_iobuf {
	struct pgt_iobuf *next_free;
	uint8_t data[];
};

/* Bytes pgtenant itself sends that could not be written at once: a chain
 * of chunks; the first chunk also knows the last one. */
struct pgt_outq {
	struct pgt_outq *next, *tail;
	uint32_t len, pos, cap;
	uint8_t data[];
};

/* Bytes to send in front of the next forwarded data.  The memory belongs to
 * the connection's owner and must stay valid until sent; what a short write
 * leaves over is copied into the outq. */
struct pgt_prefix {
	struct iovec iov[2];
	int n;
};

union pgt_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

struct pgt_conn {
	int fd;
	uint8_t kind;
	uint8_t pkt_skip;      /* the current message is being skipped, not forwarded */
	short ev_mask;         /* what ev is registered for (0 = not added) */
	bool startup_mode : 1; /* headers are startup-style (no type byte) */
	bool hold : 1;         /* handler said SB_HOLD */
	bool blocked : 1;      /* the peer's socket is full; waiting for it */
	bool barrier : 1;      /* call on_barrier once the current message is sent */
	bool connecting : 1;   /* non-blocking connect() in progress */
	bool dead : 1;         /* closed; memory is released after this loop turn */
	bool in_pump : 1;
	bool inject_pending : 1; /* sbuf_inject() left bytes in the peer's outq */
	bool hold_outq : 1;      /* input held until pgtenant's own output is sent */
	/* TLS (tls.h): */
	bool tls_hs : 1;             /* handshake in progress */
	bool tls_hs_write : 1;       /* ... waiting for the socket to take bytes */
	bool tls_await : 1;          /* SSLRequest sent, waiting for 'S' or 'N' */
	bool tls_rd_wants_write : 1; /* a read needs the socket writable first */
	bool tls_peek : 1;           /* first read: look for a direct-TLS ClientHello */
	bool tls_direct : 1;         /* direct TLS: ALPN "postgresql" required */
	bool tls_counted : 1;        /* its handshake is counted in the metrics */
	bool tls_side : 1;           /* enum tls_side */
	bool
	    tls_rd_drained : 1; /* OpenSSL's last read needed the socket: what it holds is a partial record */
	bool tls_slow : 1;      /* any of tls_hs, tls_await, tls_rd_wants_write: one test per event */
	uint32_t bigcap;        /* 0, or the size of a buffer of its own (see SBUF_MAX_WHOLE) */
	struct pgt_iobuf *buf;
	uint32_t recv_pos, parse_pos, send_pos, pkt_remain;
	uint64_t bytes_out; /* bytes written to this socket (next to fd: no cache line of its own) */
	struct pgt_outq *outq;
	struct pgt_prefix *pre; /* NULL = no prefix */
	struct ssl_st *ssl;     /* NULL = plaintext */
	const struct conn_ops *ops;
	struct event ev;
	uint64_t id;
	usec_t connect_time;
	usec_t request_time; /* last time this side sent us data */
	uint64_t bytes_in;   /* bytes received from this socket */
	union pgt_addr addr; /* peer address; sa_family AF_UNIX = unix socket */
};

void sbuf_global_init(uint32_t bufsize);
/* Memory accounting for SHOW MEM and tests. */
void sbuf_mem_stats(int *bufs_used, int *bufs_free, uint32_t *bufsize);

void sbuf_init(struct pgt_conn *c, int fd, uint8_t kind, const struct conn_ops *ops);
/* Recompute which events the connection needs and (re)register if changed. */
void sbuf_update_events(struct pgt_conn *c);
/* The same for a connection that only reads (an idle or freshly linked
 * one), when nothing says its interest can have changed: the common case
 * costs a few loads instead of a call. */
static inline void sbuf_update_events_idle(struct pgt_conn *c, const struct pgt_conn *peer)
{
	if (c->blocked || c->outq || c->pre || c->ev_mask != EV_READ || (peer && peer->blocked))
		sbuf_update_events(c);
}
/* Part of a message c forwards may have reached its peer and the rest never
 * will if c goes now: the peer's stream is not at a message boundary, and
 * pgtenant's own message (an ErrorResponse) would land inside that one.
 * Whole messages parsed and not sent yet count only under back-pressure
 * (the last write may have stopped inside one); otherwise the last write
 * ended at a boundary. */
static inline bool sbuf_mid_message(const struct pgt_conn *c)
{
	return (c->pkt_remain && !c->pkt_skip) || (c->blocked && c->send_pos < c->parse_pos);
}
/* After a change of tls_hs, tls_await or tls_rd_wants_write. */
static inline void sbuf_tls_slow_update(struct pgt_conn *c)
{
	c->tls_slow = c->tls_hs | c->tls_await | c->tls_rd_wants_write;
}
/* Queue bytes pgtenant originates; false if the socket failed (caller closes). */
bool sbuf_send_raw(struct pgt_conn *c, const void *data, size_t len) _MUSTCHECK;
/* Set c's prefix (see above); the caller forwards data to c right after. */
void sbuf_set_prefix(struct pgt_conn *c, struct pgt_prefix *pre);
/* Stop parsing c's input until its outq is sent (then it resumes by itself).
 * Returns the verdict for the handler to return. */
enum sbuf_verdict sbuf_hold_until_sent(struct pgt_conn *c);
/* Send pgtenant's own bytes to src's peer, after everything src has parsed
 * for it so far (from a handler: in front of the current message).  Data
 * that the peer's socket does not take waits in the peer's outq, in order.
 * false if the peer failed (it is closed by then). */
bool sbuf_inject(struct pgt_conn *src, const void *data, size_t len) _MUSTCHECK;
/* Send what was parsed for the peer and is not sent yet, without waiting;
 * false if c died. */
bool sbuf_flush_parsed(struct pgt_conn *c);
/* Parse and forward what is in the buffer; false if the connection died. */
bool sbuf_pump(struct pgt_conn *c);
/* Clear a hold and continue processing. */
bool sbuf_resume(struct pgt_conn *c);
void sbuf_set_barrier(struct pgt_conn *c);
/* Unregister, close the socket, release buffers. */
void sbuf_close(struct pgt_conn *c);
/* "addr:port" or "unix" for logs and SHOW output. */
void sbuf_addr_str(const union pgt_addr *a, char *out, size_t outlen, int *port);

#endif
