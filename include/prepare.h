/*
 * Protocol-level prepared statements in transaction mode (see prepare.c for
 * the model): a client's named statements live in pgtenant, and are
 * prepared lazily, under pgtenant's own names, on whichever server
 * connection the client's transaction gets.
 */
#ifndef PGT_PREPARE_H
#define PGT_PREPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "list.h"
#include "sbuf.h"
#include "server.h"

struct ps_cent;
struct ps_sent;
struct ps_req;
struct ps_evict;

/* A client's names (prepare.c). */
struct ps_client {
	struct ps_cent **b;
	uint32_t nb, n;
};

/* A server connection's statements and its queue of requests (prepare.c). */
struct ps_server {
	struct ps_sent **b;
	uint32_t nb, n;
	struct list lru;
	struct ps_req *q; /* ring of requests sent and not yet answered */
	uint32_t qcap, qhead, qtail;
	uint32_t uses;           /* named Binds in the current link */
	uint32_t epoch;          /* Sync segments sent so far */
	bool held;               /* the client is held because the queue is full */
	bool skipping;           /* the server skips everything up to the client's next Sync */
	bool emit_after;         /* made-up answers wait for the current message to be sent */
	bool resume_after;       /* so does the held client */
	uint32_t forget_pending; /* REQ_FORGET Queries in the queue */
	struct ps_evict **eb;    /* statements whose eviction Close is unanswered */
	uint32_t enb, en;
};

/* Simple Queries counted instead of queued, at most (then they are queued). */
#define PS_UNTRACKED_MAX 1024

/* What server-side statement names start with (the reset keeps these). */
#define PS_SERVER_PREFIX "_pgtenant_"

/* ps_server_packet(): not a message the tracking consumes; go on as usual */
#define PS_PASS (-1)

enum sbuf_verdict ps_client_message(struct pgt_client *c, struct pgt_server *s, struct pgt_pkt *pkt);
/* A linked client's message, in transaction mode with
 * max_prepared_statements > 0: forward, rewrite, inject or answer it.  A
 * simple Query of a client without names, with nothing of its own in
 * flight, is only counted (s->ps_untracked): its answers pass untouched. */
static inline enum sbuf_verdict ps_client_packet(struct pgt_client *c, struct pgt_server *s,
                                                 struct pgt_pkt *pkt)
{
	const struct ps_server *ps = s->ps;
	if (pkt->type == 'Q' && ps && ps->qhead == ps->qtail && !ps->skipping && (!c->ps || !c->ps->n) &&
	    s->ps_untracked < PS_UNTRACKED_MAX) {
		s->ps_untracked++;
		return SB_FORWARD;
	}
	return ps_client_message(c, s, pkt);
}
/* A server message while its client's requests are tracked: a verdict, or
 * PS_PASS. */
int ps_server_packet(struct pgt_server *s, struct pgt_pkt *pkt);
void ps_server_barrier_run(struct pgt_server *s);
/* The message that ended a tracked request is sent: answers pgtenant makes
 * up itself that follow it go out now, and a held client goes on. */
static inline void ps_server_barrier(struct pgt_server *s)
{
	if (s->ps && (s->ps->emit_after || s->ps->resume_after))
		ps_server_barrier_run(s);
}
/* pgtenant sent a Sync of its own (a client went away in the middle of an
 * extended-protocol batch): it ends the batch, and the skipping after an
 * error, as the client's would.  False if it cannot be tracked (the
 * connection is to be closed). */
bool ps_server_sync(struct pgt_server *s);
/* A CommandComplete of the client's (tag without its zero, "D..."): DISCARD
 * ALL and DEALLOCATE ALL remove every statement on the server. */
void ps_server_tag(struct pgt_server *s, const char *tag, size_t len);
/* The server skips the client's messages up to its next Sync (an error). */
static inline bool ps_server_skipping(const struct pgt_server *s)
{
	return s->ps && s->ps->skipping;
}
/* Requests of a client still unanswered on s. */
static inline bool ps_server_busy(const struct pgt_server *s)
{
	return s->ps && s->ps->qhead != s->ps->qtail;
}
/* Statements pgtenant has prepared on s. */
static inline uint32_t ps_server_count(const struct pgt_server *s)
{
	return s->ps ? s->ps->n : 0;
}
/* Statements the client has prepared (by its own names). */
static inline uint32_t ps_client_count(const struct pgt_client *c)
{
	return c->ps ? c->ps->n : 0;
}
/* Named Binds since the last call (per link: the reset decides from this
 * whether keeping s's statements pays). */
static inline uint32_t ps_server_take_uses(struct pgt_server *s)
{
	if (!s->ps)
		return 0;
	uint32_t n = s->ps->uses;
	s->ps->uses = 0;
	return n;
}
void ps_server_forget_all(struct pgt_server *s);
/* Everything on the server went (DISCARD ALL as reset): forget its
 * statements.  The request queue must be empty. */
static inline void ps_server_forget(struct pgt_server *s)
{
	if (s->ps && (s->ps->n || s->ps->uses))
		ps_server_forget_all(s);
}
void ps_server_free(struct pgt_server *s);
void ps_client_free(struct pgt_client *c);
/* Memory in statement texts shared by all clients (SHOW MEM). */
void ps_mem_stats(uint64_t *stmts, uint64_t *bytes);

#endif
