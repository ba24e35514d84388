/*
 * pgtenant's own one-row queries (the tenant registry's tenant_query,
 * auth_query): queued on an internal pool, sent by the first of its server
 * connections that is ready as Parse/Bind/Execute/Sync with one bound
 * parameter, answered row by row to the owner, finished at ReadyForQuery
 * or when the connection is lost.  The owner embeds a struct pgt_lookup and
 * says through its ops what to send and what to do with the answer.
 */
#ifndef PGT_LOOKUP_H
#define PGT_LOOKUP_H

#include <stdint.h>

#include "list.h"
#include "sbuf.h"

struct pgt_pool;
struct pgt_server;
struct pgt_pkt;
struct pgt_lookup;

struct lookup_ops {
	/* The query and its $1 at the moment it is sent (the config in force). */
	const char *(*sql)(const struct pgt_lookup *l);
	const char *(*param)(const struct pgt_lookup *l);
	/* A DataRow's body. */
	void (*row)(struct pgt_lookup *l, const uint8_t *body, uint32_t len);
	/* Finished: l->error is NULL or why it failed (the owner logs it); the
	 * owner frees l and l->error.  l is on no list any more. */
	void (*done)(struct pgt_lookup *l);
};

struct pgt_lookup {
	struct list node; /* queued until a server of pool takes it; empty after */
	struct pgt_pool *pool;
	const struct lookup_ops *ops;
	char *error;
};

/* Queue l (pool and ops set) and get a server connection going for it. */
void lookup_queue(struct pgt_lookup *l);
/* A lookup is queued in l's pool: use an idle connection or open one. */
void lookup_kick(struct pgt_lookup *l);
/* l's owner goes away without an answer (shutdown): off the queue. */
void lookup_cancel(struct pgt_lookup *l);

/* Hooks from the server and pool state machines. */
bool lookup_server_ready(struct pgt_server *s);
enum sbuf_verdict lookup_packet(struct pgt_server *s, struct pgt_pkt *pkt);
void lookup_server_lost(struct pgt_server *s, const char *reason);

#endif
