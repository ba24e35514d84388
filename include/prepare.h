/*
 * Protocol-level prepared statements in transaction mode (see prepare.c for
 * the model): a client's named statements live in pgtenant, and are
 * prepared lazily, under pgtenant's own names, on whichever server
 * connection the client's transaction gets.
 */
#ifndef PGT_PREPARE_H
#define PGT_PREPARE_H

#include <stdbool.h>
#include <stdint.h>

#include "sbuf.h"

struct pgt_client;
struct pgt_server;

/* What server-side statement names start with (the reset keeps these). */
#define PS_SERVER_PREFIX "_pgtenant_"

/* ps_server_packet(): not a message the tracking consumes; go on as usual */
#define PS_PASS (-1)

/* A linked client's message, in transaction mode with
 * max_prepared_statements > 0: forward, rewrite, inject or answer it. */
enum sbuf_verdict ps_client_packet(struct pgt_client *c, struct pgt_server *s, struct pgt_pkt *pkt);
/* A server message while its client's requests are tracked: a verdict, or
 * PS_PASS. */
int ps_server_packet(struct pgt_server *s, struct pgt_pkt *pkt);
/* The message that ended a tracked request is sent: answers pgtenant makes
 * up itself that follow it go out now. */
void ps_server_barrier(struct pgt_server *s);
/* The server skips the client's messages up to its next Sync (an error). */
bool ps_server_skipping(const struct pgt_server *s);
/* Requests of a client still unanswered on s. */
bool ps_server_busy(const struct pgt_server *s);
/* Statements pgtenant has prepared on s. */
uint32_t ps_server_count(const struct pgt_server *s);
/* Statements the client has prepared (by its own names). */
uint32_t ps_client_count(const struct pgt_client *c);
/* Named Binds since the last call (per link: the reset decides from this
 * whether keeping s's statements pays). */
uint32_t ps_server_take_uses(struct pgt_server *s);
/* Everything on the server went (DISCARD ALL as reset): forget its
 * statements.  The request queue must be empty. */
void ps_server_forget(struct pgt_server *s);
void ps_server_free(struct pgt_server *s);
void ps_client_free(struct pgt_client *c);
/* Memory in statement texts shared by all clients (SHOW MEM). */
void ps_mem_stats(uint64_t *stmts, uint64_t *bytes);

#endif
