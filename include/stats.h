/*
 * Traffic statistics of a pool, and the stats_period averages that SHOW
 * STATS and its relatives report.  Counters are bumped on the forwarding
 * path (one add each, no allocation); every stats_period the janitor
 * rotates a snapshot per pool so that averages cover the last full period,
 * as PgBouncer's do.
 */
#ifndef PGT_STATS_H
#define PGT_STATS_H

#include <stdint.h>

#include "util.h"

/* Only uint64_t members: stats_add() sums them as an array. */
struct pgt_pool_stats {
	uint64_t server_assignment_count;          /* a server was linked to a client */
	uint64_t xact_count, query_count;          /* query = one ReadyForQuery answered */
	uint64_t bytes_in, bytes_out;              /* client->server, server->client */
	uint64_t xact_time, query_time, wait_time; /* usec */
	uint64_t client_parse_count;               /* Parse messages from clients */
	uint64_t server_parse_count;               /* Parse messages sent to servers */
	uint64_t bind_count;                       /* Bind messages */
	uint64_t wait_count;                       /* times a client had to wait for a server */
};

#define STATS_NFIELDS (sizeof(struct pgt_pool_stats) / sizeof(uint64_t))

void stats_add(struct pgt_pool_stats *dst, const struct pgt_pool_stats *src);

/* Per-second rates of the counters and per-event means of the times over
 * the last complete stats_period, from the two snapshots around it. */
void stats_average(struct pgt_pool_stats *avg, const struct pgt_pool_stats *newer,
                   const struct pgt_pool_stats *older);

/* All client pools summed (pgtenant's own registry pools left out): now,
 * and at the end and start of the last period.  Any pointer may be NULL. */
void stats_sum(struct pgt_pool_stats *cur, struct pgt_pool_stats *newer, struct pgt_pool_stats *older);

/* Called by the janitor: rotate the snapshots when a period has passed. */
void stats_tick(usec_t now);

#endif
