/*
 * Statistics periods (see stats.h).  A period ends on the first janitor run
 * after stats_period has elapsed; its real length is what the averages
 * divide by, so a late janitor does not inflate rates.
 */
#include "stats.h"

#include <stddef.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "pool.h"

_Static_assert(sizeof(struct pgt_pool_stats) % sizeof(uint64_t) == 0, "stats are uint64_t only");

static usec_t period_start, period_end; /* of the last complete period */

void stats_add(struct pgt_pool_stats *dst, const struct pgt_pool_stats *src)
{
	uint64_t *d = (uint64_t *)dst;
	const uint64_t *s = (const uint64_t *)src;
	for (size_t i = 0; i < STATS_NFIELDS; i++)
		d[i] += s[i];
}

void stats_average(struct pgt_pool_stats *avg, const struct pgt_pool_stats *newer,
                   const struct pgt_pool_stats *older)
{
	*avg = (struct pgt_pool_stats){0};
	usec_t dur = period_end - period_start;
	if (period_end == 0 || dur <= 0)
		return;
#define RATE(f) avg->f = (newer->f - older->f) * (uint64_t)USEC_PER_SEC / (uint64_t)dur
#define MEAN(f, per) avg->f = newer->per > older->per ? (newer->f - older->f) / (newer->per - older->per) : 0
	RATE(server_assignment_count);
	RATE(xact_count);
	RATE(query_count);
	RATE(bytes_in);
	RATE(bytes_out);
	RATE(client_parse_count);
	RATE(server_parse_count);
	RATE(bind_count);
	RATE(wait_count);
	MEAN(xact_time, xact_count);
	MEAN(query_time, query_count);
	/* as PgBouncer: waiting time per server assignment, not per wait */
	MEAN(wait_time, server_assignment_count);
#undef RATE
#undef MEAN
}

void stats_sum(struct pgt_pool_stats *cur, struct pgt_pool_stats *newer, struct pgt_pool_stats *older)
{
	struct list *i;
	list_for_each (i, &pgt_pools) {
		const struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal)
			continue;
		if (cur)
			stats_add(cur, &p->stats);
		if (newer)
			stats_add(newer, &p->newer_stats);
		if (older)
			stats_add(older, &p->older_stats);
	}
}

void stats_tick(usec_t now)
{
	usec_t period = (usec_t)pgt.cfg->stats_period;
	if (period_end == 0 && period_start == 0) {
		period_start = now; /* first call: the first period starts now */
		return;
	}
	usec_t last = period_end ? period_end : period_start;
	if (now - last < period)
		return;
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		p->older_stats = p->newer_stats;
		p->newer_stats = p->stats;
	}
	period_start = last;
	period_end = now;
	if (pgt.cfg->log_stats) {
		struct pgt_pool_stats total = {0}, older_total = {0}, avg;
		stats_sum(NULL, &total, &older_total);
		stats_average(&avg, &total, &older_total);
		log_info("stats: %llu xacts/s, %llu queries/s, %llu parses/s, %llu binds/s, in %llu B/s, "
		         "out %llu B/s, xact %llu us, query %llu us, wait %llu us",
		         (unsigned long long)avg.xact_count, (unsigned long long)avg.query_count,
		         (unsigned long long)avg.client_parse_count, (unsigned long long)avg.bind_count,
		         (unsigned long long)avg.bytes_in, (unsigned long long)avg.bytes_out,
		         (unsigned long long)avg.xact_time, (unsigned long long)avg.query_time,
		         (unsigned long long)avg.wait_time);
	}
}
